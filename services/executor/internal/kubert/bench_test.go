package kubert

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
)

// firstLine is what both sides print.
const firstLine = "hangar-kube-first-line"

// lineWriter closes found at the first write holding firstLine.
type lineWriter struct {
	buf   strings.Builder
	found chan struct{}
	done  bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.buf.Write(p)
		if strings.Contains(w.buf.String(), firstLine+"\n") {
			w.done = true
			close(w.found)
		}
	}
	return len(p), nil
}

// BenchmarkFirstOutput: time from the start of a run to its first output
// line on the real single-node cluster, A/B interleaved in one loop:
//   - hangar: the kubernetes runtime's session (pod and Secret created, the
//     workspace streamed in, the phase followed through the logs API), as the
//     executor drives it (supervise.Run), until the line reaches the run's
//     output writer;
//   - kubectl-run: `kubectl run --rm -i --restart=Never` of the same image
//     and command, from starting the CLI until the line is on its stdout.
//
// Each side reports ms/op (its median); ratio is hangar / kubectl-run. It
// measures the runtime, not the gateway, policy and logship in front of it.
func BenchmarkFirstOutput(b *testing.B) {
	if clusterSkip != "" {
		b.Skip(clusterSkip)
	}
	ctx := context.Background()
	ns := "kubert-bench"
	if _, err := cluster.Kubectl("create", "namespace", ns); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		b.Fatal(err)
	}
	for range 100 {
		if _, err := cluster.Kubectl("-n", ns, "get", "serviceaccount", "default"); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rt, err := New(Options{Client: clientset, Config: restConfig, Namespace: ns, ExecutorID: "bench", PullPolicy: "Never"})
	if err != nil {
		b.Fatal(err)
	}
	ws := b.TempDir()
	hangar := func(i int) time.Duration {
		w := &lineWriter{found: make(chan struct{})}
		job := &runner.Job{
			RunID: fmt.Sprintf("bench-%d-%d", time.Now().UnixNano()%1e9, i), Workspace: ws,
			Stdout: w, Stderr: io.Discard, StopGrace: time.Second,
			Spec: &runv1.RunSpec{RunnerImage: testImage, Phases: []*runv1.Phase{{Name: "perform", Commands: []string{"echo " + firstLine}}}},
		}
		start := time.Now()
		res := make(chan runner.Result, 1)
		go func() { res <- supervise.Run(ctx, rt, job, supervise.Limits{}) }()
		var d time.Duration
		select {
		case <-w.found:
			d = time.Since(start)
		case r := <-res:
			b.Fatalf("run ended before its output: %+v", r)
		}
		if r := <-res; r.ExitCode != 0 {
			b.Fatalf("run: %+v", r)
		}
		return d
	}
	kubectl := func(i int) time.Duration {
		cmd := exec.Command("kubectl", "--kubeconfig", cluster.Kubeconfig, "-n", ns, "run", "bench-kubectl", "--rm", "-i", "--quiet",
			"--restart=Never", "--image="+testImage, "--image-pull-policy=Never", "--", "/bin/sh", "-c", "echo "+firstLine)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var d time.Duration
		for sc.Scan() {
			if sc.Text() == firstLine && d == 0 {
				d = time.Since(start)
			}
		}
		if err := cmd.Wait(); err != nil || d == 0 {
			b.Fatalf("kubectl run: %v (line seen: %v)", err, d != 0)
		}
		return d
	}
	hangar(0) // warm-up: the image's pages, the first pod's sandbox
	kubectl(0)
	var hs, ks []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		hs = append(hs, hangar(i))
		ks = append(ks, kubectl(i))
	}
	b.StopTimer()
	slices.Sort(hs)
	slices.Sort(ks)
	h, k := hs[len(hs)/2], ks[len(ks)/2]
	b.ReportMetric(float64(h.Milliseconds()), "hangar-ms")
	b.ReportMetric(float64(k.Milliseconds()), "kubectl-run-ms")
	b.ReportMetric(float64(h)/float64(k), "ratio")
	b.ReportMetric(0, "ns/op")
}
