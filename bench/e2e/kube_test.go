package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// kubeBenchImage is the run image scripts/kube/up.sh imports into the node's
// containerd (the host's static busybox); neither side pulls it.
const kubeBenchImage = "hangar.local/busybox:1"

// kubeBenchNamespace holds both sides' pods.
const kubeBenchNamespace = "hangar-bench"

// BenchmarkKubeFirstOutput is BenchmarkFirstOutput on Kubernetes: the real
// single-node cluster of scripts/kube (booted here, torn down at the end), and
// beside it the real binaries (embedded broker, policy, gateway, logship
// into an S3-compatible server, one executor with
// HANGAR_EXECUTOR_RUNTIME=kubernetes in the namespace hangar-bench), each its
// own process on loopback. Both sides are measured from starting a process:
//
//   - "hangar": `hangarctl run submit --spec F --follow` (sealing, publishing,
//     intake, policy, dispatch, the run's pod and Secret, the workspace
//     streamed in, the phase's log through the logs API, logship and its
//     Tail), until "hello" is on its stdout, and until it exits;
//   - "kubectl": `kubectl run NAME --rm -i --restart=Never --image=IMAGE
//     --image-pull-policy=Never --command -- /bin/sh -c 'echo hello'` in the
//     same namespace, until "hello" is on its stdout, and until it exits (its
//     pod deleted).
//
// One iteration is one pair, A/B interleaved (the order alternates). Reported:
// the median of each side, and the median, min and max of the per-pair ratios
// hangar/kubectl. It skips, saying why, without the cluster's binaries
// (scripts/kube/build.sh) or root.
func BenchmarkKubeFirstOutput(b *testing.B) {
	root, err := harness.FindRoot()
	if err != nil {
		b.Fatal(err)
	}
	if why := harness.KubeUnavailable(root); why != "" {
		b.Skip("Kubernetes first output: " + why)
	}
	bins := harness.NewBinaries(root, filepath.Join(tmpRoot, "kube-bin"))
	if err := bins.Build("hangarctl", "gateway", "policy", "executor", "logship"); err != nil {
		b.Fatal(err)
	}
	kube := harness.StartKube(b, root)
	kube.Kubectl(b, "create", "namespace", kubeBenchNamespace)
	// The namespace's default ServiceAccount comes from the controller
	// manager; kubectl run's pod needs it.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if _, err := kube.TryKubectl("-n", kubeBenchNamespace, "get", "serviceaccount", "default"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no default ServiceAccount in " + kubeBenchNamespace)
		}
	}

	cp := harness.NewControlPlane(b, bins.Path(b, "hangarctl"))
	broker, _ := cp.StartEmbeddedBroker(b)
	key, csr := cp.Keygen(b, b.TempDir())
	token := cp.CreatePool(b, "pool-kb", csr, broker)
	s3 := harness.StartS3(b, "hangar-logs")
	if err := os.WriteFile(filepath.Join(cp.Dir, "s3.json"), []byte(s3.ConfigJSON()), 0o600); err != nil {
		b.Fatal(err)
	}
	pol := harness.StartPolicy(b, bins.Path(b, "policy"), "")
	ls := harness.StartLogship(b, bins.Path(b, "logship"), s3)
	gw := harness.StartGateway(b, bins.Path(b, "gateway"), token, harness.KeyEnv(b, key), pol.GRPCAddr, "HANGAR_WORKER_ID=gw-kb")
	harness.StartExecutor(b, bins.Path(b, "executor"), "kbench-1", gw.GRPCAddr, ls.GRPCAddr,
		"HANGAR_EXECUTOR_RUNTIME=kubernetes",
		"HANGAR_KUBECONFIG="+kube.Kubeconfig,
		"HANGAR_KUBE_NAMESPACE="+kubeBenchNamespace,
		"HANGAR_KUBE_IMAGE_PULL_POLICY=Never",
		"HANGAR_EXECUTOR_SLOTS=2",
		"HANGAR_MIN_FREE_MEMORY_MB=0",
		"HANGAR_MIN_FREE_DISK_MB=0",
	)

	spec := harness.Task(kubeBenchImage, "echo "+firstLine)
	specFile := harness.WriteFile(b, b.TempDir(), "spec.json", spec.JSON())
	ctl := bins.Path(b, "hangarctl")
	hangar := func() (time.Duration, time.Duration) {
		return firstAndExit(b, exec.Command(ctl, "run", "submit", "--dir", cp.Dir, "--pool", "pool-kb", "--spec", specFile,
			"--follow", "--logship", ls.GRPCAddr, "--timeout", "5m"))
	}
	n, missed := 0, 0
	// kubectl run -i attaches once the container runs: when the echo is
	// over before the attach and the container still there, kubectl prints
	// nothing and exits 0 (no fallback to the logs). Such a try is not a
	// sample: it is counted (kubectl-missed) and the pair's kubectl side
	// tried again, at most 5 times.
	kubectl := func() (time.Duration, time.Duration) {
		for range 5 {
			n++
			first, exit, ok := kubectlRun(b, kube.Kubeconfig, fmt.Sprintf("bench-kubectl-%d", n))
			if ok {
				return first, exit
			}
			missed++
		}
		b.Fatal("kubectl run -i printed nothing 5 times in a row")
		return 0, 0
	}
	// Untimed warm-up of both sides (the first run also waits for the
	// executor to attach to the gateway).
	hangar()
	kubectl()
	var hf, he, kf, ke, rf, re []float64
	i := 0
	for b.Loop() {
		var h1, h2, k1, k2 time.Duration
		if i%2 == 0 {
			h1, h2 = hangar()
			k1, k2 = kubectl()
		} else {
			k1, k2 = kubectl()
			h1, h2 = hangar()
		}
		i++
		hf, he, kf, ke = append(hf, ms(h1)), append(he, ms(h2)), append(kf, ms(k1)), append(ke, ms(k2))
		rf, re = append(rf, ms(h1)/ms(k1)), append(re, ms(h2)/ms(k2))
	}
	b.ReportMetric(median(hf), "hangar-first-ms")
	b.ReportMetric(median(kf), "kubectl-first-ms")
	b.ReportMetric(median(he), "hangar-exit-ms")
	b.ReportMetric(median(ke), "kubectl-exit-ms")
	b.ReportMetric(median(rf), "ratio-first-p50")
	b.ReportMetric(slices.Min(rf), "ratio-first-min")
	b.ReportMetric(slices.Max(rf), "ratio-first-max")
	b.ReportMetric(median(re), "ratio-exit-p50")
	b.ReportMetric(slices.Min(re), "ratio-exit-min")
	b.ReportMetric(slices.Max(re), "ratio-exit-max")
	b.ReportMetric(float64(len(rf)), "pairs")
	b.ReportMetric(float64(missed), "kubectl-missed")
	fmt.Fprintf(os.Stderr, "bench: Kubernetes first output, per pair (ms) hangar %v kubectl %v; cluster booted in %s\n",
		hf, kf, kube.BootTime.Round(100*time.Millisecond))
}

// kubectlRun runs the kubectl side once: the times to firstLine on its stdout
// and to its exit, and whether the line came at all.
func kubectlRun(b *testing.B, kubeconfig, name string) (time.Duration, time.Duration, bool) {
	b.Helper()
	cmd := exec.Command("kubectl", "--kubeconfig", kubeconfig, "-n", kubeBenchNamespace,
		"run", name, "--rm", "-i", "--quiet", "--restart=Never",
		"--image="+kubeBenchImage, "--image-pull-policy=Never", "--command", "--", "/bin/sh", "-c", "echo "+firstLine)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var first time.Duration
	for sc.Scan() {
		if first == 0 && strings.TrimSpace(sc.Text()) == firstLine {
			first = time.Since(t0)
		}
	}
	err = cmd.Wait()
	exit := time.Since(t0)
	if err != nil {
		b.Fatalf("kubectl run: %v\n%s", err, stderr.String())
	}
	return first, exit, first != 0
}
