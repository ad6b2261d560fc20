package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// The node's run image: the static busybox that scripts/kube/up.sh imports.
const kubeImage = "hangar.local/busybox:1"

// kubeNamespace is the runs' namespace of the recommended overlay.
const kubeNamespace = "hangar-runs"

// kubeSecret is the secret variable of the masking run.
const kubeSecret = "kube-Hx7Rq2Lp-e2e-secret"

// kubeEnv is the stack TestKubernetes shares between its subtests.
type kubeEnv struct {
	kube     *harness.Kube
	cp       *harness.ControlPlane
	s3       *harness.S3
	logship  *harness.Logship
	gw       *harness.Gateway
	obs      *harness.Observer
	executor string // binary
	env      []string
	ex1, ex2 *harness.Executor
	// privateImage is the runner image in the test's private registry.
	privateImage string

	// top is TestKubernetes's t: an executor a subtest restarts lives on
	// after that subtest (Executor.Start stops it in t.Cleanup).
	top *testing.T

	mu     sync.Mutex
	runIDs []string
}

// TestKubernetes is issue 13's "Shown by" over the real binaries and a real
// single-node Kubernetes (scripts/kube): the embedded broker, policy, a
// gateway, logship writing to an S3-compatible server, and two executors with
// HANGAR_EXECUTOR_RUNTIME=kubernetes sharing the namespace hangar-runs, each
// authenticated as the overlay's ServiceAccount (its Role is all they may
// do). It skips, saying why, when the cluster's binaries are not built.
func TestKubernetes(t *testing.T) {
	root := bins.Root()
	kube := harness.StartKube(t, root)
	if err := bins.Build("executor", "logship"); err != nil {
		t.Fatal(err)
	}
	x := &kubeEnv{kube: kube, executor: bins.Path(t, "executor"), top: t}

	// The overlay's namespace and RBAC, as kubectl apply would create them.
	ovl := filepath.Join(root, "deploy", "k8s", "overlays", "kubernetes", "executor")
	kube.Kubectl(t, "apply", "-f", filepath.Join(ovl, "namespace.yaml"))
	kube.Kubectl(t, "-n", kubeNamespace, "apply", "-f", filepath.Join(ovl, "rbac.yaml"))
	saConfig := kube.ServiceAccountKubeconfig(t, kubeNamespace, "hangar-executor")

	// A private registry with basic auth (Debian's docker-registry), holding
	// a runner image pushed from the node and untagged there, and its pull
	// Secret, which the executors name (HANGAR_KUBE_IMAGE_PULL_SECRETS).
	reg := harness.StartRegistry(t, "hangar-puller", "kube-Pull-7Wq3-secret")
	kube.TrustRegistry(t, reg.Addr)
	x.privateImage = kube.PushFromNode(t, reg, kubeImage, "hangar/private-runner:1")
	kube.PullSecret(t, kubeNamespace, "regcred", reg)
	// A private git host (git http-backend on loopback), reached through the
	// executors' private VCS mapping.
	vcsBase, _ := harness.GitServer(t, "acme/infra.git", map[string]string{"infra/prod/main.tf": "# private-vcs-file: kube stack\n"})

	x.cp = harness.NewControlPlane(t, bins.Path(t, "hangarctl"))
	broker, _ := x.cp.StartEmbeddedBroker(t)
	key, csr := x.cp.Keygen(t, t.TempDir())
	token := x.cp.CreatePool(t, "pool-k", csr, broker)
	x.s3 = harness.StartS3(t, "hangar-logs")
	if err := os.WriteFile(filepath.Join(x.cp.Dir, "s3.json"), []byte(x.s3.ConfigJSON()), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := harness.StartPolicy(t, bins.Path(t, "policy"), "")
	x.logship = harness.StartLogship(t, bins.Path(t, "logship"), x.s3, "HANGAR_LOGSHIP_CHUNK_INTERVAL=300ms")
	x.obs = harness.Observe(t, broker, x.cp.Dir, "pool-k")
	x.gw = harness.StartGateway(t, bins.Path(t, "gateway"), token, harness.KeyEnv(t, key), policy.GRPCAddr,
		"HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=gw-k", "HANGAR_LEASE_DURATION=10s")
	x.env = []string{
		"HANGAR_EXECUTOR_RUNTIME=kubernetes",
		"HANGAR_KUBECONFIG=" + saConfig,
		"HANGAR_KUBE_NAMESPACE=" + kubeNamespace,
		// The node's images are there (never pulled); the private
		// registry's is pulled through the pull Secret.
		"HANGAR_KUBE_IMAGE_PULL_POLICY=IfNotPresent",
		"HANGAR_KUBE_IMAGE_PULL_SECRETS=regcred",
		"HANGAR_PRIVATEVCS_MAPPING_NAME_1=vcs-kube",
		"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1=" + vcsBase,
		"HANGAR_EXECUTOR_SLOTS=3",
		"HANGAR_CANCEL_GRACE=2s",
		"HANGAR_WORKER_MEMORY_MB=48",
		"HANGAR_WORKER_MILLICPUS=500",
		"HANGAR_MIN_FREE_MEMORY_MB=0",
		"HANGAR_MIN_FREE_DISK_MB=0",
	}
	// The hand-off state bucket (tracked runs waiting for confirmation).
	x.env = append(x.env, x.s3.Env()...)
	x.ex1 = harness.StartExecutor(t, x.executor, "kexec-1", x.gw.GRPCAddr, x.logship.GRPCAddr, x.env...)
	x.ex2 = harness.StartExecutor(t, x.executor, "kexec-2", x.gw.GRPCAddr, x.logship.GRPCAddr, x.env...)
	waitExecutors(t, x.obs, "kexec-1", "kexec-2")

	t.Run("runs", func(t *testing.T) {
		t.Run("phases, settings and a secret masked in S3", x.testPhases)
		t.Run("failing", x.testFailing)
		t.Run("timeout", x.testTimeout)
		t.Run("cancelled", x.testCancel)
		t.Run("missing image", x.testMissingImage)
		t.Run("OOM-killed", x.testOOM)
		t.Run("image from a private registry through imagePullSecrets", x.testPrivateImage)
		t.Run("evicted", x.testEvicted)
		t.Run("source from a private VCS host", x.testPrivateVCS)
	})
	t.Run("executor killed and restarted mid-run, next to another's run", x.testRestart)
	// After testRestart: an executor restarted just before it takes no
	// share of testRestart's two runs, which then skips.
	t.Run("hand-off and confirmation", x.testHandOff)
	t.Run("nothing left in the namespace", func(t *testing.T) {
		x.eventuallyEmpty(t)
	})
	t.Run("kubectl apply -k of the overlay, a run through its executor", x.testOverlay)
	t.Run("no service logs the secret", func(t *testing.T) {
		for _, p := range []*harness.Process{x.ex1.Process, x.ex2.Process, x.logship.Process, x.gw.Process} {
			if strings.Contains(p.Output(), kubeSecret) {
				t.Errorf("%s's own log contains the secret", p.Name)
			}
		}
	})
}

// submit submits spec with a fresh run id; with follow it returns the
// running `hangarctl run submit --follow`.
func (x *kubeEnv) submit(t *testing.T, spec *harness.RunSpec, follow bool) (string, *harness.Process) {
	t.Helper()
	runID := newRunID()
	x.mu.Lock()
	x.runIDs = append(x.runIDs, runID)
	x.mu.Unlock()
	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", spec.JSON())
	args := []string{"run", "submit", "--dir", x.cp.Dir, "--pool", "pool-k", "--spec", specFile, "--run-id", runID}
	if !follow {
		if r := harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, args...); r.Code != 0 {
			t.Fatalf("hangarctl run submit: %s", r)
		}
		return runID, nil
	}
	args = append(args, "--follow", "--logship", x.logship.GRPCAddr, "--timeout", "3m")
	return runID, harness.Start(t, "submit-"+runID, nil, x.cp.Ctl, args...)
}

func (x *kubeEnv) finished(t *testing.T, runID string) *eventv1.RunFinished {
	t.Helper()
	return finished(t, x.obs, runID)
}

// storedLog is the run's final log object in S3.
func (x *kubeEnv) storedLog(t *testing.T, runID string, fin *eventv1.RunFinished) string {
	t.Helper()
	if fin.GetLogKey() == "" {
		t.Fatalf("run %s: no log key in its final event", runID)
	}
	body, _, ok := x.s3.Get(t, fin.GetLogKey())
	if !ok {
		t.Fatalf("run %s: no log object %s in S3", runID, fin.GetLogKey())
	}
	return string(body)
}

func (x *kubeEnv) testPhases(t *testing.T) {
	spec := harness.Task(kubeImage)
	spec.Type = "RUN_TYPE_TRACKED"
	spec.Env = []harness.EnvVar{{Name: "TF_TOKEN", Value: kubeSecret, Secret: true}, {Name: "PLAIN", Value: "plain-value"}}
	spec.Phases = []harness.Phase{
		{Name: "init", Before: []string{"echo before-init"}, Commands: []string{"echo init-ran > /workspace/state"}},
		{Name: "plan", Commands: []string{
			"cat /workspace/state",
			"echo token=$TF_TOKEN plain=$PLAIN",
			"cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
			"grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status",
			"id -u",
		}, After: []string{"echo after-plan"}},
		{Name: "apply", Commands: []string{"echo applied"}},
	}
	runID, sub := x.submit(t, spec, true)
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
		t.Fatalf("run %s: %s %d %q\n%s", runID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason(), sub.Output())
	}
	if code := sub.WaitExit(time.Minute); code != 0 {
		t.Errorf("hangarctl run submit --follow: exit code %d", code)
	}
	log := x.storedLog(t, runID, fin)
	for _, want := range []string{"before-init", "init-ran", "token=****** plain=plain-value", fmt.Sprint(48 << 20), "NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t00000000000004fb", "after-plan", "applied"} {
		if !strings.Contains(log, want) {
			t.Errorf("stored log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, kubeSecret) || strings.Contains(sub.Output(), kubeSecret) {
		t.Errorf("the secret is in the stored or followed log")
	}
	if i, j := strings.Index(log, "before-init"), strings.Index(log, "applied"); i < 0 || j < i {
		t.Errorf("phases out of order:\n%s", log)
	}
	evs := x.obs.RunEvents(runID)
	if got := strings.Join(kinds(evs), ","); !strings.Contains(got, "phase:init,phase:plan,phase:apply,finished") {
		t.Errorf("events %s", got)
	}
}

func (x *kubeEnv) testFailing(t *testing.T) {
	spec := harness.Task(kubeImage, "echo failing", "exit 3", "echo never")
	runID, _ := x.submit(t, spec, false)
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || fin.GetExitCode() != 3 || !strings.Contains(fin.GetReason(), "exited with code 3") {
		t.Errorf("run %s: %s %d %q", runID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason())
	}
	if log := x.storedLog(t, runID, fin); !hasLine(log, "failing") || hasLine(log, "never") {
		t.Errorf("stored log:\n%s", log)
	}
}

func (x *kubeEnv) testTimeout(t *testing.T) {
	spec := harness.Task(kubeImage, "echo started", "sleep 120")
	spec.TimeoutSeconds = 5
	runID, _ := x.submit(t, spec, false)
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_TIMED_OUT {
		t.Errorf("run %s: %s %q, want timed out", runID, fin.GetOutcome(), fin.GetReason())
	}
}

func (x *kubeEnv) testCancel(t *testing.T) {
	spec := harness.Task(kubeImage, "echo sleeping", "sleep 300")
	runID, sub := x.submit(t, spec, true)
	sub.WaitOutput(regexp.MustCompile(`(?m)^sleeping$`), 2*wait)
	if r := harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, "run", "cancel", "--dir", x.cp.Dir, "--pool", "pool-k", runID); r.Code != 0 {
		t.Fatalf("hangarctl run cancel: %s", r)
	}
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_STOPPED || !strings.Contains(fin.GetReason(), "cancel") {
		t.Errorf("run %s: %s %q, want stopped (cancelled)", runID, fin.GetOutcome(), fin.GetReason())
	}
}

func (x *kubeEnv) testMissingImage(t *testing.T) {
	spec := harness.Task("hangar.local/no-such-image:1", "echo never")
	runID, _ := x.submit(t, spec, false)
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(fin.GetReason(), "could not be pulled") {
		t.Errorf("run %s: %s %q, want failed: could not be pulled", runID, fin.GetOutcome(), fin.GetReason())
	}
}

func (x *kubeEnv) testOOM(t *testing.T) {
	spec := harness.Task(kubeImage, "echo eating", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}")
	runID, _ := x.submit(t, spec, false)
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(fin.GetReason(), "OOMKilled") {
		t.Errorf("run %s: %s %q, want failed: OOMKilled", runID, fin.GetOutcome(), fin.GetReason())
	}
}

// testPrivateImage: a run whose runner image is in a registry with basic auth
// goes through: the kubelet pulls it with the pull Secret the executors name.
func (x *kubeEnv) testPrivateImage(t *testing.T) {
	spec := harness.Task(x.privateImage, "echo from the private image")
	runID, sub := x.submit(t, spec, true)
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
		t.Fatalf("run %s: %s %d %q\n%s", runID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason(), sub.Output())
	}
	if log := x.storedLog(t, runID, fin); !hasLine(log, "from the private image") {
		t.Errorf("stored log:\n%s", log)
	}
}

// testPrivateVCS: the executor fetches the run's source through its private
// VCS mapping and streams it into the pod; the phase runs in the project root.
func (x *kubeEnv) testPrivateVCS(t *testing.T) {
	spec := harness.Task(kubeImage, "pwd", "cat main.tf")
	spec.Source = &harness.Source{URL: "https://vcs-kube/acme/infra.git", Ref: "main", ProjectRoot: "infra/prod"}
	runID, _ := x.submit(t, spec, false)
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("run %s: %s %q, want finished", runID, fin.GetOutcome(), fin.GetReason())
	}
	if log := x.storedLog(t, runID, fin); !hasLine(log, "# private-vcs-file: kube stack") || !hasLine(log, "/workspace/infra/prod") {
		t.Errorf("the run did not cat infra/prod/main.tf of the private repository in /workspace/infra/prod:\n%s", log)
	}
}

// testHandOff: a tracked run that needs confirmation stops after plan, its
// pod's workspace exported and stored encrypted in S3; the executor that
// planned it is stopped, so the confirmed run resumes on the other one, which
// restores the stored workspace into a new pod and runs apply there.
func (x *kubeEnv) testHandOff(t *testing.T) {
	marker := harness.RandomName("kube-handoff-")
	spec := trackedSpec{RunSpec: harness.Task(kubeImage), NeedsConfirmation: true}
	spec.Type = "RUN_TYPE_TRACKED"
	spec.Phases = []harness.Phase{
		{Name: "init", Commands: []string{"echo init-ran"}},
		{Name: "plan", Commands: []string{"echo " + marker + " > planned.txt", "echo plan-ran"}},
		{Name: "apply", Commands: []string{"cat planned.txt", "echo apply-ran"}},
	}
	runID := newRunID()
	x.mu.Lock()
	x.runIDs = append(x.runIDs, runID)
	x.mu.Unlock()
	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", spec.JSON())
	sub := harness.Start(t, "submit-"+runID, nil, x.cp.Ctl, "run", "submit", "--dir", x.cp.Dir, "--pool", "pool-k", "--spec", specFile,
		"--run-id", runID, "--follow", "--logship", x.logship.GRPCAddr, "--timeout", "3m")
	if code := sub.WaitExit(4 * time.Minute); code != 3 || !strings.Contains(sub.Output(), "unconfirmed") {
		t.Fatalf("hangarctl run submit --follow of a run that waits for confirmation: exit code %d, want 3 (unconfirmed):\n%s", code, sub.Output())
	}
	unconf := x.obs.WaitEvent(2*wait, "unconfirmed event of "+runID, func(ev *eventv1.Event) bool {
		return ev.GetRunId() == runID && ev.GetUnconfirmed() != nil
	}).GetUnconfirmed()
	state, _, ok := x.s3.Get(t, unconf.GetStateKey())
	if !ok || len(state) == 0 {
		t.Fatalf("run %s: no state object %q in S3", runID, unconf.GetStateKey())
	}
	if strings.Contains(string(state), marker) {
		t.Errorf("the state object %s in S3 contains the plaintext marker", unconf.GetStateKey())
	}
	if body, _, _ := x.s3.Get(t, "runs/"+runID+"/log"); lineIndex(string(body), "plan-ran") < 0 {
		t.Errorf("log of the planned run:\n%s", body)
	}

	planned := startedOn(x.obs.RunEvents(runID))
	execs := map[string]*harness.Executor{"kexec-1": x.ex1, "kexec-2": x.ex2}
	other := map[string]string{"kexec-1": "kexec-2", "kexec-2": "kexec-1"}[planned]
	if other == "" {
		t.Fatalf("run %s planned on %q, want kexec-1 or kexec-2", runID, planned)
	}
	execs[planned].Shutdown()
	waitExecutors(t, x.obs, other)
	defer func() {
		execs[planned].Start(x.top)
		waitExecutors(t, x.obs, "kexec-1", "kexec-2")
	}()

	if r := harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, "run", "confirm", "--dir", x.cp.Dir, "--pool", "pool-k", runID); r.Code != 0 {
		t.Fatalf("hangarctl run confirm: %s", r)
	}
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
		t.Fatalf("confirmed run %s: %s %d %q, want finished", runID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason())
	}
	var starts []string
	for _, ev := range x.obs.RunEvents(runID) {
		if s := ev.GetStarted(); s != nil {
			starts = append(starts, s.GetExecutorId())
		}
	}
	if want := []string{planned, other}; !slices.Equal(starts, want) {
		t.Errorf("run %s started on %v, want %v (planned, then resumed on the other executor)", runID, starts, want)
	}
	got := kinds(x.obs.RunEvents(runID))
	plan, unc, apply, end := slices.Index(got, "phase:plan"), slices.Index(got, "unconfirmed"), slices.Index(got, "phase:apply"), slices.Index(got, "finished")
	if plan < 0 || plan > unc || unc > apply || apply > end {
		t.Errorf("run %s: events %v, want plan, unconfirmed, apply, finished in that order", runID, got)
	}
	log := x.storedLog(t, runID, fin)
	expectLines(t, "log of the resumed run", log, marker, "apply-ran")
	if hasLine(log, "plan-ran") {
		t.Errorf("the resumed run ran plan again:\n%s", log)
	}
}

// testEvicted: the run's pod evicted through the Eviction API (a node drain,
// an autoscaler) ends the run as failed, and `hangarctl run submit --follow`
// says it was evicted.
func (x *kubeEnv) testEvicted(t *testing.T) {
	spec := harness.Task(kubeImage, "echo waiting", "sleep 300")
	runID, sub := x.submit(t, spec, true)
	sub.WaitOutput(regexp.MustCompile(`(?m)^waiting$`), 2*wait)
	pod := strings.TrimSpace(x.kube.Kubectl(t, "-n", kubeNamespace, "get", "pods", "-l", "hangar.dev/run-id="+runID, "-o", "jsonpath={.items[0].metadata.name}"))
	eviction := harness.WriteFile(t, t.TempDir(), "eviction.json",
		fmt.Sprintf(`{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": %q, "namespace": %q}}`, pod, kubeNamespace))
	x.kube.Kubectl(t, "create", "--raw", "/api/v1/namespaces/"+kubeNamespace+"/pods/"+pod+"/eviction", "-f", eviction)
	fin := x.finished(t, runID)
	const reason = "phase perform: the run's pod was evicted through the Eviction API (a node drain, or an autoscaler removing the node): Eviction API: evicting"
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || fin.GetReason() != reason {
		t.Errorf("run %s: %s %q, want failed: %q", runID, fin.GetOutcome(), fin.GetReason(), reason)
	}
	sub.WaitExit(time.Minute)
	if line := "failed (exit code -1): " + reason; !strings.Contains(sub.Output(), line) {
		t.Errorf("hangarctl run submit --follow does not print %q:\n%s", line, sub.Output())
	}
}

// testRestart: kexec-1 is killed (SIGKILL) in the middle of a run while
// kexec-2 runs another in the same namespace, then started again: kexec-1's
// run ends (lost, its pod removed) and kexec-2's run finishes untouched.
func (x *kubeEnv) testRestart(t *testing.T) {
	// Two runs of 40 s: the gateway gives each to the executor with the
	// most free slots, so one runs on each when kexec-1 dies.
	spec := harness.Task(kubeImage, "echo holding", "i=0; while [ $i -lt 40 ]; do echo tick $i; i=$((i+1)); sleep 1; done")
	a, subA := x.submit(t, spec, true)
	b, subB := x.submit(t, spec, true)
	subA.WaitOutput(regexp.MustCompile(`(?m)^tick 2$`), 2*wait)
	subB.WaitOutput(regexp.MustCompile(`(?m)^tick 2$`), 2*wait)
	on := map[string]string{a: startedOn(x.obs.RunEvents(a)), b: startedOn(x.obs.RunEvents(b))}
	victim, survivor := a, b
	if on[a] != "kexec-1" {
		victim, survivor = b, a
	}
	if on[victim] != "kexec-1" || on[survivor] != "kexec-2" {
		t.Skipf("the gateway put both runs on one executor (%v): nothing to show", on)
	}
	x.ex1.Kill()
	x.ex1.WaitExit(30 * time.Second)
	x.ex1.Start(x.top)
	waitExecutors(t, x.obs, "kexec-1", "kexec-2")
	finV := x.finished(t, victim)
	finS := x.finished(t, survivor)
	if finS.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Errorf("kexec-2's run %s: %s %q, want finished (another executor's restart must not touch it)", survivor, finS.GetOutcome(), finS.GetReason())
	}
	if log := x.storedLog(t, survivor, finS); !hasLine(log, "tick 39") {
		t.Errorf("kexec-2's run's log is incomplete:\n%s", log)
	}
	// kexec-1 re-adopts its run (its pod ran on meanwhile): the run ends
	// with its real exit code and the stored log has every line once, in
	// order.
	if finV.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || finV.GetExitCode() != 0 {
		t.Fatalf("kexec-1's run %s after the restart: %s %d %q, want finished (re-adopted)", victim, finV.GetOutcome(), finV.GetExitCode(), finV.GetReason())
	}
	log := x.storedLog(t, victim, finV)
	last := -1
	for i := range 40 {
		line := fmt.Sprintf("tick %d", i)
		if n := strings.Count(log, line+"\n"); n != 1 {
			t.Errorf("re-adopted run: %q appears %d times", line, n)
		}
		at := lineIndex(log, line)
		if at < last {
			t.Errorf("re-adopted run: %q out of order", line)
		}
		last = at
	}
	if !strings.Contains(log, "re-adopted") {
		t.Errorf("the re-adopted run's log does not say so:\n%s", log)
	}
}

// testOverlay applies the recommended overlay's executor part
// (deploy/k8s/overlays/kubernetes/executor) with kubectl, patched only for
// this cluster (which has no kube-proxy and no DNS): the executor pod on the
// host's network, reaching the test's gateway and logship and the API server
// on loopback, the image built locally and never pulled, no mTLS (the test's
// gateway is plaintext on loopback), no ServiceMonitor (no Prometheus
// Operator here). The host executors stop first, so the
// run can only go to the Deployment's executor.
func (x *kubeEnv) testOverlay(t *testing.T) {
	root := bins.Root()
	image := "hangar/executor:kube-e2e"
	r := harness.Run(t, 15*time.Minute, []string{"HANGAR_IMAGE_TAG=kube-e2e"}, filepath.Join(root, "scripts", "images.sh"), "executor")
	if r.Code != 0 {
		t.Fatalf("scripts/images.sh executor: %s", r)
	}
	x.kube.ImportImage(t, image)
	x.ex1.Shutdown()
	x.ex2.Shutdown()

	debug := strings.TrimPrefix(harness.FreeAddr(t), "127.0.0.1:")
	apiPort := strings.TrimPrefix(x.kube.APIServer(t), "127.0.0.1:")
	dir := t.TempDir()
	// kustomize takes a base only by a relative path.
	base, err := filepath.Rel(dir, filepath.Join(root, "deploy", "k8s", "overlays", "kubernetes", "executor"))
	if err != nil {
		t.Fatal(err)
	}
	kust := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: hangar/executor
    newTag: kube-e2e
patches:
  # No Prometheus Operator (its CRD) on this cluster.
  - patch: |-
      apiVersion: monitoring.coreos.com/v1
      kind: ServiceMonitor
      metadata:
        name: hangar-executor
        namespace: hangar-runs
      $patch: delete
  - patch: |-
      apiVersion: v1
      kind: Namespace
      metadata:
        name: hangar-runs
        labels:
          pod-security.kubernetes.io/enforce: privileged
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: hangar-executor
        namespace: hangar-runs
      spec:
        replicas: 1
        template:
          spec:
            hostNetwork: true
            terminationGracePeriodSeconds: 30
            containers:
              - name: executor
                imagePullPolicy: Never
                env:
                  - {name: HANGAR_GATEWAY_ADDR, value: "%s"}
                  - {name: HANGAR_LOGSHIP_ADDR, value: "%s"}
                  - {name: HANGAR_EXECUTOR_DEBUG_ADDR, value: ":%s"}
                  - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
                  - {name: KUBERNETES_SERVICE_PORT, value: "%s"}
                  - {name: HANGAR_KUBE_IMAGE_PULL_POLICY, value: Never}
                  - {name: HANGAR_WORKER_MEMORY_MB, value: "64"}
                  - {name: HANGAR_WORKER_MILLICPUS, value: "250"}
                  - {name: HANGAR_MIN_FREE_DISK_MB, value: "0"}
                  - {name: HANGAR_TLS_CA, $patch: delete}
                  - {name: HANGAR_TLS_ENROLL_CERT, $patch: delete}
                  - {name: HANGAR_TLS_ENROLL_KEY, $patch: delete}
                volumeMounts:
                  - {mountPath: /etc/hangar/tls, $patch: delete}
            volumes:
              - {name: tls, $patch: delete}
  - target: {kind: Deployment, name: hangar-executor}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/ports/0/containerPort
        value: %s
`, base, x.gw.GRPCAddr, x.logship.GRPCAddr, debug, apiPort, debug)
	harness.WriteFile(t, dir, "kustomization.yaml", kust)
	t.Cleanup(func() {
		_, _ = x.kube.TryKubectl("delete", "-k", dir, "--wait=true", "--timeout=120s")
	})
	x.kube.Kubectl(t, "apply", "-k", dir)
	if _, err := x.kube.TryKubectl("-n", kubeNamespace, "rollout", "status", "deployment/hangar-executor", "--timeout=180s"); err != nil {
		out, _ := x.kube.TryKubectl("-n", kubeNamespace, "describe", "pods", "-l", "app.kubernetes.io/name=hangar-executor")
		logs, _ := x.kube.TryKubectl("-n", kubeNamespace, "logs", "-l", "app.kubernetes.io/name=hangar-executor", "--tail=50")
		t.Fatalf("the overlay's executor did not become ready: %v\n%s\n%s", err, out, logs)
	}
	podName := strings.TrimPrefix(strings.TrimSpace(x.kube.Kubectl(t, "-n", kubeNamespace, "get", "pods", "-l", "app.kubernetes.io/name=hangar-executor", "-o", "name")), "pod/")
	x.obs.WaitHeartbeat(wait, "a heartbeat listing only the overlay's executor "+podName, func(hb *eventv1.Heartbeat) bool {
		ex := hb.GetExecutors()
		return len(ex) == 1 && ex[0].GetExecutorId() == podName
	})

	spec := harness.Task(kubeImage, "echo through the overlay", "sleep 3", "echo done")
	runID, sub := x.submit(t, spec, true)
	sub.WaitOutput(regexp.MustCompile(`(?m)^through the overlay$`), 2*wait)
	// The run's pod is owned by the executor's pod.
	owner := x.kube.Kubectl(t, "-n", kubeNamespace, "get", "pods", "-l", "hangar.dev/run-id="+runID, "-o", "jsonpath={.items[0].metadata.ownerReferences[0].name}")
	if owner != podName {
		t.Errorf("the run's pod is owned by %q, want the executor's pod %q", owner, podName)
	}
	fin := x.finished(t, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("run %s: %s %q", runID, fin.GetOutcome(), fin.GetReason())
	}
	if on := startedOn(x.obs.RunEvents(runID)); on != podName {
		t.Errorf("run %s started on %q, want the overlay's executor %q", runID, on, podName)
	}
	if log := x.storedLog(t, runID, fin); !hasLine(log, "through the overlay") || !hasLine(log, "done") {
		t.Errorf("stored log:\n%s", log)
	}
	x.eventuallyEmpty(t)
}

// eventuallyEmpty: no pod or Secret of a run is left in the namespace.
func (x *kubeEnv) eventuallyEmpty(t *testing.T) {
	t.Helper()
	var left string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		out, err := x.kube.TryKubectl("-n", kubeNamespace, "get", "pods,secrets", "-l", "hangar.dev/managed=true", "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		if left = strings.TrimSpace(out); left == "" {
			return
		}
	}
	t.Errorf("left in %s after the runs:\n%s", kubeNamespace, left)
}
