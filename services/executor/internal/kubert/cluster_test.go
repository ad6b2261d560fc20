package kubert

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/kubert/kubetest"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
)

// The run image up.sh imports into the node: the static busybox.
const testImage = "hangar.local/busybox:1"

var (
	cluster     *kubetest.Cluster
	clusterSkip string
	restConfig  *rest.Config
	clientset   kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	clusterSkip = kubetest.Unavailable()
	if clusterSkip == "" {
		c, err := kubetest.Up()
		defer func() {
			if err := c.Down(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cluster = c
		if restConfig, clientset, err = Connect(c.Kubeconfig); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "kubert: cluster booted in %s\n", c.BootTime.Round(100*time.Millisecond))
	}
	return m.Run()
}

func requireCluster(t *testing.T) {
	t.Helper()
	if clusterSkip != "" {
		t.Skip(clusterSkip)
	}
}

// namespace creates a namespace for one test and deletes it afterwards,
// failing the test if anything of the runs is left in it.
func namespace(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ns := fmt.Sprintf("kubert-%d", time.Now().UnixNano()%1e9)
	if _, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The namespace's default service account comes from the controller manager.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := clientset.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no default service account in the test namespace")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			assertEmpty(t, ns)
		}
		_ = clientset.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return ns
}

// assertEmpty fails if pods or Secrets of Hangar's runs are left in ns once
// the garbage collector had 30 seconds for the Secrets of deleted pods.
func assertEmpty(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: LabelManaged + "=true"}
	var left []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		left = nil
		pods, err := clientset.CoreV1().Pods(ns).List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		secs, err := clientset.CoreV1().Secrets(ns).List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			left = append(left, "pod "+p.Name)
		}
		for _, s := range secs.Items {
			left = append(left, "secret "+s.Name)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("left in namespace %s: %v", ns, left)
	}
}

func newRuntime(t *testing.T, ns, executor string, mod func(*Options)) *Runtime {
	t.Helper()
	o := Options{Client: clientset, Config: restConfig, Namespace: ns, ExecutorID: executor, PoolID: "pool-t", PullPolicy: corev1.PullNever}
	if mod != nil {
		mod(&o)
	}
	rt, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rt
}

// syncBuffer collects output written from the runtime's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func job(t *testing.T, runID string, phases ...*runv1.Phase) (*runner.Job, *syncBuffer) {
	ws := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ws, "infra"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ws, "infra", "main.tf"), []byte("# from the workspace\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	return &runner.Job{
		RunID: runID, Workspace: ws, Stdout: out, Stderr: out, StopGrace: 2 * time.Second,
		Spec: &runv1.RunSpec{RunnerImage: testImage, Source: &runv1.Source{ProjectRoot: "infra"}, Phases: phases},
	}, out
}

func TestClusterPhases(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", func(o *Options) { o.Memory, o.MilliCPUs = 64<<20, 500 })
	j, out := job(t, "Run_Phases-1",
		&runv1.Phase{Name: "init", Before: []string{"echo before-init"}, Commands: []string{"pwd", "cat main.tf", `echo "secret=$SECRET_VALUE plain=$PLAIN"`, "echo made > made.txt"}},
		&runv1.Phase{Name: "plan", Commands: []string{"cat made.txt", "echo to-stderr >&2", "cat /proc/self/status | grep -E '^(NoNewPrivs|CapEff|Seccomp):'"}, After: []string{"echo after-plan"}},
	)
	j.Env = []string{"SECRET_VALUE=s3cr3t-value", "PLAIN=visible"}
	var phases []string
	j.OnPhase = func(p string) { phases = append(phases, p) }

	// The pod while it runs: labels, owner of the secret, security context.
	seen := make(chan *corev1.Pod, 1)
	go func() {
		for range 300 {
			p, err := clientset.CoreV1().Pods(ns).Get(context.Background(), podName(j.RunID), metav1.GetOptions{})
			if err == nil {
				s, _ := clientset.CoreV1().Secrets(ns).Get(context.Background(), podName(j.RunID), metav1.GetOptions{})
				if s != nil && len(s.OwnerReferences) == 1 && s.OwnerReferences[0].UID == p.UID {
					seen <- p
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		seen <- nil
	}()
	res := supervise.Run(context.Background(), rt, j, supervise.Limits{})
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED || res.ExitCode != 0 {
		t.Fatalf("result = %+v\noutput:\n%s", res, out)
	}
	log := out.String()
	for _, want := range []string{"before-init", "/workspace/infra", "# from the workspace", "secret=s3cr3t-value plain=visible", "made", "to-stderr", "after-plan", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q:\n%s", want, log)
		}
	}
	if strings.Index(log, "before-init") > strings.Index(log, "after-plan") {
		t.Errorf("phases out of order:\n%s", log)
	}
	if strings.Join(phases, ",") != "init,plan" {
		t.Errorf("OnPhase calls = %v", phases)
	}
	p := <-seen
	if p == nil {
		t.Fatal("never saw the run's pod with a secret it owns")
	}
	if p.Labels[LabelExecutorID] != "exec-a" || p.Labels[LabelRunID] != "Run_Phases-1" || p.Labels[LabelPoolID] != "pool-t" {
		t.Errorf("labels = %v", p.Labels)
	}
	if c := p.Spec.InitContainers[1]; c.Resources.Limits.Memory().Value() != 64<<20 {
		t.Errorf("limits = %v", c.Resources.Limits)
	}
}

func TestClusterFailures(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", func(o *Options) { o.Memory = 32 << 20 })
	for _, tc := range []struct {
		name    string
		image   string
		phases  []*runv1.Phase
		outcome eventv1.Outcome
		code    int
		reason  string
		absent  string
	}{
		{"failing phase", testImage, []*runv1.Phase{{Name: "init", Commands: []string{"echo one", "exit 3"}}, {Name: "plan", Commands: []string{"echo never-runs"}}},
			eventv1.Outcome_OUTCOME_FAILED, 3, "phase init exited with code 3", "never-runs"},
		{"out of memory", testImage, []*runv1.Phase{{Name: "apply", Commands: []string{"x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"}}},
			eventv1.Outcome_OUTCOME_FAILED, -1, "phase apply: phase apply was killed for running out of memory (OOMKilled: its memory limit of 32 MiB, exit code 137)", ""},
		{"missing image", "hangar.local/does-not-exist:1", []*runv1.Phase{{Name: "init", Commands: []string{"echo hi"}}},
			eventv1.Outcome_OUTCOME_FAILED, -1, "could not be pulled (ErrImageNeverPull)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, out := job(t, "fail-"+strings.ReplaceAll(tc.name, " ", "-"), tc.phases...)
			j.Spec.RunnerImage = tc.image
			res := supervise.Run(context.Background(), rt, j, supervise.Limits{})
			if res.Outcome != tc.outcome || res.ExitCode != tc.code || !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("result = %+v, want %v, %d, %q\noutput:\n%s", res, tc.outcome, tc.code, tc.reason, out)
			}
			if tc.absent != "" && strings.Contains(out.String(), tc.absent) {
				t.Errorf("output has %q:\n%s", tc.absent, out)
			}
		})
	}
}

func TestClusterCancel(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", nil)
	j, out := job(t, "cancel-1", &runv1.Phase{Name: "apply", Commands: []string{"echo started", "sleep 300"}})
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan runner.Result)
	go func() { done <- supervise.Run(ctx, rt, j, supervise.Limits{}) }()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "started") {
		if time.Now().After(deadline) {
			t.Fatalf("the phase never started; output:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel(runner.ErrCancelled)
	res := <-done
	if res.Outcome != eventv1.Outcome_OUTCOME_STOPPED || !strings.Contains(res.Reason, "cancelled") {
		t.Errorf("result = %+v", res)
	}
}

func TestClusterExport(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", nil)
	j, _ := job(t, "export-1", &runv1.Phase{Name: "plan", Commands: []string{"echo planned > plan.out"}})
	var buf bytes.Buffer
	j.ExportTo = &buf
	res := supervise.Run(context.Background(), rt, j, supervise.Limits{})
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("result = %+v", res)
	}
	var names []string
	var planned string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if strings.HasSuffix(h.Name, "plan.out") {
			b, _ := io.ReadAll(tr)
			planned = string(b)
		}
	}
	if planned != "planned\n" || !strings.Contains(strings.Join(names, " "), "infra/main.tf") {
		t.Errorf("exported %v, plan.out %q", names, planned)
	}
}

func TestClusterExecutorsShareNamespace(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	a := newRuntime(t, ns, "exec-a", nil)
	b := newRuntime(t, ns, "exec-b", nil)
	j, out := job(t, "shared-1", &runv1.Phase{Name: "apply", Commands: []string{"echo b-runs", "sleep 5", "echo b-done"}})
	done := make(chan runner.Result)
	go func() { done <- supervise.Run(context.Background(), b, j, supervise.Limits{}) }()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "b-runs") {
		if time.Now().After(deadline) {
			t.Fatalf("b's run never started:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// exec-a restarting reaps its own leftovers, never exec-b's running pod.
	ids, err := a.Reap(context.Background())
	if err != nil || len(ids) != 0 {
		t.Errorf("a.Reap = %v, %v", ids, err)
	}
	res := <-done
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED || !strings.Contains(out.String(), "b-done") {
		t.Errorf("b's run = %+v\n%s", res, out)
	}
}

func TestClusterReap(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", nil)
	// What a run leaves when its executor dies: its pod and Secret, running.
	spec := &podSpec{Namespace: ns, Name: podName("reap-1"), RunID: "reap-1", ExecutorID: "exec-a", Image: testImage, Workdir: workspaceDir,
		Phases: []*runv1.Phase{{Name: "apply", Commands: []string{"sleep 300"}}}, PullPolicy: corev1.PullNever}
	pod, err := clientset.CoreV1().Pods(ns).Create(context.Background(), spec.pod(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec := spec.secret(nil)
	sec.OwnerReferences = []metav1.OwnerReference{ownedBy(pod)}
	if _, err := clientset.CoreV1().Secrets(ns).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ids, err := rt.Reap(context.Background())
	if err != nil || strings.Join(ids, ",") != "reap-1" {
		t.Fatalf("Reap = %v, %v", ids, err)
	}
	if err := waitGone(context.Background(), clientset.CoreV1().Pods(ns), spec.Name); err != nil {
		t.Fatal(err)
	}
}

func TestClusterUnschedulable(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", func(o *Options) { o.MilliCPUs = 64000; o.PendingTimeout = 3 * time.Second })
	j, _ := job(t, "pending-1", &runv1.Phase{Name: "apply", Commands: []string{"echo never"}})
	done := make(chan runner.Result)
	go func() { done <- supervise.Run(context.Background(), rt, j, supervise.Limits{}) }()
	sawPending := false
	var res runner.Result
wait:
	for {
		select {
		case res = <-done:
			break wait
		case <-time.After(50 * time.Millisecond):
			if rt.PendingRuns() == 1 {
				sawPending = true
			}
		}
	}
	if !sawPending {
		t.Error("the unschedulable run was never counted as pending")
	}
	if rt.PendingRuns() != 0 {
		t.Errorf("PendingRuns = %d after the run", rt.PendingRuns())
	}
	if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(res.Reason, "could not be scheduled within 3s") {
		t.Errorf("result = %+v", res)
	}
}

// TestClusterDeadline: a pod whose executor does not stop it at the run
// timeout (the executor is gone; here supervise has no run timeout) ends at
// its activeDeadlineSeconds, and the run is reported timed out, saying so.
func TestClusterDeadline(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", func(o *Options) { o.RunTimeout, o.DeadlineMargin = 8*time.Second, time.Millisecond })
	j, out := job(t, "deadline-1", &runv1.Phase{Name: "apply", Commands: []string{"echo started", "sleep 300", "echo never"}})
	res := supervise.Run(context.Background(), rt, j, supervise.Limits{})
	want := runner.Result{Outcome: eventv1.Outcome_OUTCOME_TIMED_OUT, ExitCode: -1,
		Reason: "phase apply: the run's pod ran past its activeDeadlineSeconds (9s: the run timeout and a margin) and the kubelet stopped it"}
	if res != want {
		t.Errorf("result = %+v\nwant     %+v\noutput:\n%s", res, want, out)
	}
	if !strings.Contains(out.String(), "started") || strings.Contains(out.String(), "never") {
		t.Errorf("output:\n%s", out)
	}
}

// TestClusterEvicted: the run's pod evicted through the Eviction API (what a
// node drain or a cluster autoscaler does) ends the run as failed, saying it
// was evicted, rather than as a phase killed by SIGTERM or a pod deleted by
// someone.
func TestClusterEvicted(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	rt := newRuntime(t, ns, "exec-a", nil)
	j, out := job(t, "evict-1", &runv1.Phase{Name: "apply", Commands: []string{"echo started", "sleep 300"}})
	done := make(chan runner.Result)
	go func() { done <- supervise.Run(context.Background(), rt, j, supervise.Limits{}) }()
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(out.String(), "started"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the phase never started; output:\n%s", out)
		}
	}
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: podName(j.RunID), Namespace: ns}}
	if err := clientset.CoreV1().Pods(ns).EvictV1(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	res := <-done
	want := runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1,
		Reason: "phase apply: the run's pod was evicted through the Eviction API (a node drain, or an autoscaler removing the node): Eviction API: evicting"}
	if res != want {
		t.Errorf("result = %+v\nwant     %+v", res, want)
	}
}

// TestClusterPrivateRegistry: the runner image in a private registry with
// basic auth (Debian's docker-registry, htpasswd), pushed there from the
// node's containerd and untagged in it, so that the kubelet must pull it:
// without HANGAR_KUBE_IMAGE_PULL_SECRETS the run fails saying the registry
// refused the pull; with the pull Secret the run goes through.
func TestClusterPrivateRegistry(t *testing.T) {
	requireCluster(t)
	ns := namespace(t)
	reg := startRegistry(t, "hangar-puller", "Pull-9xQ2-secret")
	image := reg.push(t, testImage, "hangar/private-runner:1")
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{reg.addr: map[string]string{
		"username": reg.user, "password": reg.password, "auth": base64.StdEncoding.EncodeToString([]byte(reg.user + ":" + reg.password)),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clientset.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "regcred"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		secrets []string
		outcome eventv1.Outcome
		reason  []string
	}{
		{"without the pull secret", nil, eventv1.Outcome_OUTCOME_FAILED, []string{
			"the runner image " + image + " could not be pulled (ImagePullBackOff)", "401 Unauthorized",
			"(the registry refused the credentials: check HANGAR_KUBE_IMAGE_PULL_SECRETS and that Secret)"}},
		{"with the pull secret", []string{"regcred"}, eventv1.Outcome_OUTCOME_FINISHED, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, ns, "exec-a", func(o *Options) { o.PullPolicy, o.PullSecrets = corev1.PullAlways, tc.secrets })
			j, out := job(t, "private-"+strings.ReplaceAll(tc.name, " ", "-"), &runv1.Phase{Name: "plan", Commands: []string{"echo from the private image"}})
			j.Spec.RunnerImage = image
			res := supervise.Run(context.Background(), rt, j, supervise.Limits{})
			if res.Outcome != tc.outcome {
				t.Fatalf("result = %+v, want %v\noutput:\n%s", res, tc.outcome, out)
			}
			for _, want := range tc.reason {
				if !strings.Contains(res.Reason, want) {
					t.Errorf("reason %q lacks %q", res.Reason, want)
				}
			}
			if tc.outcome == eventv1.Outcome_OUTCOME_FINISHED && !strings.Contains(out.String(), "from the private image") {
				t.Errorf("output:\n%s", out)
			}
			if strings.Contains(res.Reason, reg.password) || strings.Contains(out.String(), reg.password) {
				t.Error("the registry's password is in the result or the output")
			}
		})
	}
}

// registry is Debian's docker-registry on a loopback port with htpasswd basic
// auth, known to the node's containerd as a plain-HTTP registry (hosts.toml).
type registry struct {
	addr, user, password string
}

func startRegistry(t *testing.T, user, password string) *registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry is not installed (scripts/setup.sh installs it: apt-get install docker-registry)")
	}
	htpasswd, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Fatal("htpasswd is not installed (scripts/setup.sh installs it: apt-get install apache2-utils)")
	}
	dir := t.TempDir()
	hash, err := exec.Command(htpasswd, "-Bbn", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), bytes.TrimSpace(hash), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: kubert-test\nauth:\n  htpasswd:\n    realm: kubert-test\n    path: %s\n",
		filepath.Join(dir, "data"), addr, filepath.Join(dir, "htpasswd"))
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry on %s not ready (GET /v2/ = 401) after 1m:\n%s", addr, logs.String())
		}
	}
	// The node's containerd reaches it over plain HTTP (hosts.toml under
	// the CRI registry config_path that up.sh sets).
	hosts := filepath.Join(cluster.Dir, "containerd", "certs.d", addr)
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", addr, addr)
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(hosts) })
	return &registry{addr: addr, user: user, password: password}
}

// push tags the node's image local as ADDR/repo in the node's containerd,
// pushes it with the registry's credentials, and removes that name again,
// so that the kubelet has to pull it. It returns the pushed name.
func (r *registry) push(t *testing.T, local, repo string) string {
	t.Helper()
	image := r.addr + "/" + repo
	ctr := func(args ...string) {
		t.Helper()
		out, err := exec.Command("ctr", append([]string{"-a", cluster.Containerd, "-n", "k8s.io", "images"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr images %s: %v\n%s", args[0], err, out)
		}
	}
	ctr("tag", "--force", local, image)
	ctr("push", "--plain-http", "--user", r.user+":"+r.password, image)
	ctr("rm", image)
	return image
}
