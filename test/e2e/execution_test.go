package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/telemetry/otlprecv"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// The run image: the host's static busybox, imported into the engine.
const runnerImage = "hangar-e2e/busybox:latest"

// Values of the executors' environment passed to runs (HANGAR_MASK_ENVS and
// HANGAR_WHITELIST_ENVS).
const (
	maskedEnvValue  = "mask-env-Vq7Lp2Xz9KwR"
	visibleEnvValue = "visible-env-3bT8mN"
)

// execEnv is the stack TestExecution shares between its subtests.
type execEnv struct {
	cp         *harness.ControlPlane
	s3         *harness.S3
	otlp       *otlprecv.Receiver
	logship    *harness.Logship
	gwA, gwB   *harness.Gateway
	obsA, obsB *harness.Observer
	execA      *harness.Executor
	execB      *harness.Executor
	executor   string // binary
	extraDir   string // host side of HANGAR_WORKER_EXTRA_MOUNTS, /e2e-extra in runs
	network    string
	subnet     *net.IPNet
	vcsURL     string
	otlpEnv    []string

	mu     sync.Mutex
	runIDs map[string]bool
	// services whose output must never show a secret.
	services []*harness.Process
}

// TestExecution is issue 3's "Shown by", over the real binaries and the real
// Docker engine: the embedded broker, the policy service (no policy: every run
// allowed), two gateways (pool-a, pool-b), logship writing to an S3-compatible
// server, and executors. Pool-a has two Docker executors (exec-a, exec-b) with
// the pool-wide settings (network, extra mounts, masked and whitelisted
// variables, private VCS); pool-b has one executor at a time, each with the
// setting under test (runtime, timeouts, registry credentials, process runtime).
func TestExecution(t *testing.T) {
	harness.RequireDocker(t)
	if err := bins.Build("executor", "logship"); err != nil {
		t.Fatal(err)
	}
	ctl := bins.Path(t, "hangarctl")
	x := &execEnv{runIDs: map[string]bool{}, executor: bins.Path(t, "executor")}

	// Last resort, after every executor stopped: nothing of our runs stays on
	// the engine even when a test failed half-way.
	t.Cleanup(func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		harness.RemoveManaged(t, x.runIDs)
	})

	harness.BusyboxImage(t, runnerImage)
	x.cp = harness.NewControlPlane(t, ctl)
	broker, _ := x.cp.StartEmbeddedBroker(t)
	keyA, csrA := x.cp.Keygen(t, t.TempDir())
	tokenA := x.cp.CreatePool(t, "pool-a", csrA, broker)
	keyB, csrB := x.cp.Keygen(t, t.TempDir())
	tokenB := x.cp.CreatePool(t, "pool-b", csrB, broker)

	x.s3 = harness.StartS3(t, "hangar-logs")
	// hangarctl logs reads S3 settings from DIR/s3.json (cmd/hangarctl/internal/cli/logs.go).
	if err := os.WriteFile(filepath.Join(x.cp.Dir, "s3.json"), []byte(x.s3.ConfigJSON()), 0o600); err != nil {
		t.Fatal(err)
	}

	rcv, err := otlprecv.Start(context.Background())
	if err != nil {
		t.Fatalf("OTLP receiver: %v", err)
	}
	t.Cleanup(rcv.Close)
	x.otlp = rcv
	x.otlpEnv = []string{"HANGAR_OTLP_ENDPOINT=" + rcv.Addr(), "HANGAR_OTLP_INSECURE=true", "HANGAR_OTLP_BATCH_TIMEOUT=200ms"}

	policy := harness.StartPolicy(t, bins.Path(t, "policy"), "", x.otlpEnv...)
	x.logship = harness.StartLogship(t, bins.Path(t, "logship"), x.s3, append([]string{"HANGAR_LOGSHIP_CHUNK_INTERVAL=300ms"}, x.otlpEnv...)...)
	x.obsA = harness.Observe(t, broker, x.cp.Dir, "pool-a")
	x.obsB = harness.Observe(t, broker, x.cp.Dir, "pool-b")
	gatewayBin := bins.Path(t, "gateway")
	x.gwA = harness.StartGateway(t, gatewayBin, tokenA, harness.KeyEnv(t, keyA), policy.GRPCAddr,
		append([]string{"HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=gw-a"}, x.otlpEnv...)...)
	x.gwB = harness.StartGateway(t, gatewayBin, tokenB, harness.KeyEnv(t, keyB), policy.GRPCAddr,
		append([]string{"HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=gw-b"}, x.otlpEnv...)...)
	x.services = append(x.services, policy.Process, x.logship.Process, x.gwA.Process, x.gwB.Process)

	// What pool-a's executors give their runs.
	var subnet string
	x.network, subnet = harness.DockerNetwork(t)
	if _, x.subnet, err = net.ParseCIDR(subnet); err != nil {
		t.Fatal(err)
	}
	x.extraDir = t.TempDir()
	if err := os.Chmod(x.extraDir, 0o755); err != nil {
		t.Fatal(err)
	}
	harness.WriteFile(t, x.extraDir, "hello.txt", "hello from the host's extra mount\n")
	vcsBase, _ := harness.GitServer(t, "acme/infra.git", map[string]string{
		"infra/prod/main.tf": "# private-vcs-file: prod stack\n",
		"README":             "acme infra\n",
	})
	x.vcsURL = vcsBase
	poolEnv := append([]string{
		"HANGAR_EXECUTOR_SLOTS=2",
		"HANGAR_EXECUTOR_RUNTIME=docker",
		"HANGAR_CANCEL_GRACE=2s",
		"HANGAR_WORKER_NETWORK=" + x.network,
		"HANGAR_WORKER_EXTRA_MOUNTS=" + x.extraDir + ":/e2e-extra:ro",
		"E2E_MASKED=" + maskedEnvValue,
		"E2E_VISIBLE=" + visibleEnvValue,
		"HANGAR_MASK_ENVS=E2E_MASKED",
		"HANGAR_WHITELIST_ENVS=E2E_VISIBLE",
		"HANGAR_PRIVATEVCS_MAPPING_NAME_1=vcs-e2e",
		"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1=" + vcsBase,
	}, x.otlpEnv...)
	x.execA = harness.StartExecutor(t, x.executor, "exec-a", x.gwA.GRPCAddr, x.logship.GRPCAddr, poolEnv...)
	x.execB = harness.StartExecutor(t, x.executor, "exec-b", x.gwA.GRPCAddr, x.logship.GRPCAddr, poolEnv...)
	x.services = append(x.services, x.execA.Process, x.execB.Process)
	waitExecutors(t, x.obsA, "exec-a", "exec-b")

	t.Run("runs spread over both executors", x.testSpread)
	t.Run("runs", func(t *testing.T) {
		t.Run("pool-a", func(t *testing.T) {
			t.Parallel()
			t.Run("phases, hooks and exit status", x.testPhases)
			t.Run("secrets are masked in S3", x.testSecret)
			t.Run("worker settings", x.testWorkerSettings)
			t.Run("private VCS", x.testPrivateVCS)
			t.Run("cancel", x.testCancel)
		})
		t.Run("pool-b", func(t *testing.T) {
			t.Parallel()
			t.Run("unavailable container runtime", x.testBadRuntime)
			t.Run("logs timeout", x.testLogsTimeout)
			t.Run("run timeout", x.testRunTimeout)
			t.Run("private registry", x.testRegistry)
			t.Run("process runtime", x.testProcessRuntime)
		})
	})
	t.Run("nothing left behind", func(t *testing.T) {
		x.mu.Lock()
		ids := cloneSet(x.runIDs)
		x.mu.Unlock()
		if left := harness.ManagedLeftovers(t, ids); len(left) > 0 {
			t.Errorf("left on the Docker engine after %d runs ended (labels hangar.managed=true):\n%s", len(ids), strings.Join(left, "\n"))
		}
		for _, e := range []*harness.Executor{x.execA, x.execB} {
			if ws := e.Workspaces(t); len(ws) > 0 {
				t.Errorf("executor %s: its work dir still holds workspaces %q", e.ID, ws)
			}
		}
	})
	t.Run("no service logs a secret", func(t *testing.T) {
		for _, p := range x.services {
			out := p.Output()
			for _, s := range []string{runSecret, maskedEnvValue, base64.StdEncoding.EncodeToString([]byte(runSecret))} {
				if strings.Contains(out, s) {
					t.Errorf("%s's own log contains a secret value (%d bytes)", p.Name, len(s))
				}
			}
		}
	})
}

func cloneSet(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// waitExecutors waits for a heartbeat of the pool listing exactly ids as
// attached executors.
func waitExecutors(t *testing.T, obs *harness.Observer, ids ...string) {
	t.Helper()
	want := slices.Clone(ids)
	slices.Sort(want)
	obs.WaitHeartbeat(wait, fmt.Sprintf("heartbeat listing executors %v", want), func(hb *eventv1.Heartbeat) bool {
		var got []string
		for _, e := range hb.GetExecutors() {
			got = append(got, e.GetExecutorId())
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

// submit submits spec to pool with a fresh run id. With follow, it returns the
// running `hangarctl run submit --follow --logship ... --timeout 2m`; without,
// it waits for the submission and returns nil.
func (x *execEnv) submit(t *testing.T, pool string, spec *harness.RunSpec, follow bool, extra ...string) (string, *harness.Process) {
	t.Helper()
	runID := newRunID()
	x.mu.Lock()
	x.runIDs[runID] = true
	x.mu.Unlock()
	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", spec.JSON())
	args := append([]string{"run", "submit", "--dir", x.cp.Dir, "--pool", pool, "--spec", specFile, "--run-id", runID}, extra...)
	if !follow {
		r := harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, args...)
		if r.Code != 0 || !strings.Contains(r.Stdout, "run "+runID+" submitted to pool "+pool) {
			t.Fatalf("hangarctl run submit: %s", r)
		}
		return runID, nil
	}
	args = append(args, "--follow", "--logship", x.logship.GRPCAddr, "--timeout", "2m")
	return runID, harness.Start(t, "submit-"+runID, nil, x.cp.Ctl, args...)
}

// finished waits for the run's final event.
func finished(t *testing.T, obs *harness.Observer, runID string) *eventv1.RunFinished {
	t.Helper()
	return obs.WaitEvent(2*wait, "finished event of "+runID, func(ev *eventv1.Event) bool {
		return ev.GetRunId() == runID && ev.GetFinished() != nil
	}).GetFinished()
}

// kinds names a run's events in sequence order: received, admitted, started,
// phase:NAME, finished.
func kinds(evs []*eventv1.Event) []string {
	var out []string
	for _, ev := range evs {
		switch k := ev.GetKind().(type) {
		case *eventv1.Event_Received:
			out = append(out, "received")
		case *eventv1.Event_Admitted:
			out = append(out, "admitted")
		case *eventv1.Event_Denied:
			out = append(out, "denied")
		case *eventv1.Event_Started:
			out = append(out, "started")
		case *eventv1.Event_Phase:
			out = append(out, "phase:"+k.Phase.GetPhase())
		case *eventv1.Event_Finished:
			out = append(out, "finished")
		case *eventv1.Event_Unconfirmed:
			out = append(out, "unconfirmed")
		case *eventv1.Event_Rejected:
			out = append(out, "rejected")
		}
	}
	return out
}

// expectEvents checks the run's events are exactly want, with sequences 1..n.
func expectEvents(t *testing.T, obs *harness.Observer, runID string, want ...string) []*eventv1.Event {
	t.Helper()
	evs := obs.RunEvents(runID)
	if got := kinds(evs); !slices.Equal(got, want) {
		t.Errorf("run %s: events %v, want %v:\n%s", runID, got, want, describe(evs))
	}
	for i, ev := range evs {
		if ev.GetSequence() != uint64(i+1) {
			t.Errorf("run %s: event %d has sequence %d:\n%s", runID, i, ev.GetSequence(), describe(evs))
			break
		}
	}
	return evs
}

func startedOn(evs []*eventv1.Event) string {
	for _, ev := range evs {
		if s := ev.GetStarted(); s != nil {
			return s.GetExecutorId()
		}
	}
	return ""
}

// storedLog checks the final event's log key names the run's final object in
// S3 and returns the object. With HANGAR_E2E_SHOW_LOGS set, the test logs it.
func (x *execEnv) storedLog(t *testing.T, runID string, fin *eventv1.RunFinished) string {
	t.Helper()
	key := "runs/" + runID + "/log"
	if fin.GetLogKey() != key {
		t.Errorf("run %s: final event's log key %q, want %q", runID, fin.GetLogKey(), key)
	}
	body, meta, ok := x.s3.Get(t, key)
	if !ok {
		t.Fatalf("run %s: no final log object %s in S3 (keys: %q)", runID, key, x.s3.Keys(t, "runs/"+runID+"/"))
	}
	if len(meta) == 0 {
		t.Errorf("run %s: the final log object has no metadata (hangar-bytes, hangar-sha256)", runID)
	}
	if os.Getenv("HANGAR_E2E_SHOW_LOGS") != "" {
		t.Logf("stored log of run %s (%s):\n%s", runID, harness.DescribeEvent(x.lastEvent(runID)), body)
	}
	return string(body)
}

// lastEvent is the run's last event on either pool.
func (x *execEnv) lastEvent(runID string) *eventv1.Event {
	evs := append(x.obsA.RunEvents(runID), x.obsB.RunEvents(runID)...)
	if len(evs) == 0 {
		return &eventv1.Event{}
	}
	return evs[len(evs)-1]
}

// hasLine reports whether the log has exactly this line.
func hasLine(log, line string) bool {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `\r?$`).MatchString(log)
}

// lineIndex is the offset of the first occurrence of line as a whole line, or -1.
func lineIndex(log, line string) int {
	loc := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `\r?$`).FindStringIndex(log)
	if loc == nil {
		return -1
	}
	return loc[0]
}

// waitFile waits (in a run) for a file of the extra mount the test creates.
func waitFile(name string) string {
	return fmt.Sprintf("while [ ! -e /e2e-extra/%s ]; do sleep 0.2; done", name)
}

func (x *execEnv) testSpread(t *testing.T) {
	// Each run holds its slot until the gate opens: with 2 slots on each
	// executor, 4 runs must take all 4 slots, whatever the timing.
	gate := harness.RandomName("gate-")
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(x.extraDir, gate), nil, 0o644) })
	var runs []string
	for i := range 4 {
		spec := harness.Task(runnerImage, fmt.Sprintf("echo spread-%d", i), "sleep 2", waitFile(gate))
		id, _ := x.submit(t, "pool-a", spec, false)
		runs = append(runs, id)
	}
	byExec := map[string][]string{}
	for _, id := range runs {
		ev := x.obsA.WaitEvent(wait, "started event of "+id, func(ev *eventv1.Event) bool {
			return ev.GetRunId() == id && ev.GetStarted() != nil
		})
		byExec[ev.GetStarted().GetExecutorId()] = append(byExec[ev.GetStarted().GetExecutorId()], id)
	}
	if err := os.WriteFile(filepath.Join(x.extraDir, gate), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, id := range runs {
		if fin := finished(t, x.obsA, id); fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
			t.Errorf("run %s: %s", id, harness.DescribeEvent(x.obsA.RunEvents(id)[len(x.obsA.RunEvents(id))-1]))
		}
		expectEvents(t, x.obsA, id, "received", "admitted", "started", "phase:prepare", "phase:perform", "finished")
	}
	if len(byExec["exec-a"]) != 2 || len(byExec["exec-b"]) != 2 {
		t.Errorf("4 concurrent runs on 2 executors of 2 slots: started on %v, want 2 on exec-a and 2 on exec-b", byExec)
	}
}

func (x *execEnv) testPhases(t *testing.T) {
	tracked := func(planExit int) *harness.RunSpec {
		s := harness.Task(runnerImage)
		s.Type = "RUN_TYPE_TRACKED"
		plan := []string{"echo plan:cmd"}
		if planExit != 0 {
			plan = append(plan, fmt.Sprintf("exit %d", planExit))
		}
		s.Phases = []harness.Phase{
			{Name: "init", Before: []string{"echo init:before"}, Commands: []string{"echo init:cmd"}, After: []string{"echo init:after"}},
			{Name: "plan", Before: []string{"echo plan:before"}, Commands: plan, After: []string{"echo plan:after"}},
			{Name: "apply", Before: []string{"echo apply:before"}, Commands: []string{"echo apply:cmd"}, After: []string{"echo apply:after"}},
		}
		return s
	}
	okID, okSubmit := x.submit(t, "pool-a", tracked(0), true, "--otlp", x.otlp.Addr())
	failID, failSubmit := x.submit(t, "pool-a", tracked(3), true)

	t.Run("a finished run", func(t *testing.T) {
		if code := okSubmit.WaitExit(3 * time.Minute); code != 0 {
			t.Errorf("hangarctl run submit --follow of a finished run: exit code %d, want 0:\n%s", code, okSubmit.Output())
		}
		fin := finished(t, x.obsA, okID)
		if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
			t.Errorf("run %s: outcome %s exit %d %q, want finished, 0", okID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason())
		}
		expectEvents(t, x.obsA, okID, "received", "admitted", "started", "phase:prepare", "phase:init", "phase:plan", "phase:apply", "finished")
		log := x.storedLog(t, okID, fin)
		last := -1
		for _, l := range []string{"init:before", "init:cmd", "init:after", "plan:before", "plan:cmd", "plan:after", "apply:before", "apply:cmd", "apply:after"} {
			i := lineIndex(log, l)
			if i < 0 || i < last {
				t.Errorf("stored log: line %q missing or out of order (hooks and phases must run in order):\n%s", l, log)
				break
			}
			last = i
		}
		if !strings.Contains(log, "+ echo init:before") {
			t.Errorf("stored log does not echo the lines run (\"+ echo init:before\"):\n%s", log)
		}
		// The live log followed by --follow is the stored log's content.
		if !strings.Contains(okSubmit.Output(), "apply:after") {
			t.Errorf("hangarctl run submit --follow did not show the live log:\n%s", okSubmit.Output())
		}
	})

	t.Run("plan exits 3", func(t *testing.T) {
		if code := failSubmit.WaitExit(3 * time.Minute); code != 1 {
			t.Errorf("hangarctl run submit --follow of a failed run: exit code %d, want 1:\n%s", code, failSubmit.Output())
		}
		if !strings.Contains(failSubmit.Output(), "[event] failed (exit code 3)") {
			t.Errorf("hangarctl run submit --follow does not say \"failed (exit code 3)\":\n%s", failSubmit.Output())
		}
		fin := finished(t, x.obsA, failID)
		if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || fin.GetExitCode() != 3 || !strings.Contains(fin.GetReason(), "plan") {
			t.Errorf("run %s: outcome %s exit %d reason %q, want failed, exit 3, a reason naming plan", failID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason())
		}
		expectEvents(t, x.obsA, failID, "received", "admitted", "started", "phase:prepare", "phase:init", "phase:plan", "finished")
		log := x.storedLog(t, failID, fin)
		for _, l := range []string{"init:before", "init:cmd", "init:after", "plan:before", "plan:cmd"} {
			if !hasLine(log, l) {
				t.Errorf("stored log lacks %q:\n%s", l, log)
			}
		}
		for _, l := range []string{"plan:after", "apply:before", "apply:cmd", "apply:after"} {
			if hasLine(log, l) {
				t.Errorf("stored log has %q: nothing may run after the failing command:\n%s", l, log)
			}
		}
	})

	t.Run("one trace across every service", func(t *testing.T) {
		m := regexp.MustCompile(`\(trace ([0-9a-f]{32})\)`).FindStringSubmatch(okSubmit.Output())
		if m == nil {
			t.Fatalf("hangarctl run submit does not print the trace id:\n%s", okSubmit.Output())
		}
		services := []string{"hangar-executor", "hangar-gateway", "hangar-logship", "hangar-policy", "hangarctl"}
		phases := []string{"executor.phase prepare", "executor.phase init", "executor.phase plan", "executor.phase apply"}
		spans, err := x.otlp.WaitFor(func(spans []otlprecv.RecordedSpan) bool {
			in := otlprecv.ByTrace(spans, m[1])
			got := otlprecv.Services(in)
			for _, s := range services {
				if !slices.Contains(got, s) {
					return false
				}
			}
			for _, p := range phases {
				if !slices.ContainsFunc(in, func(s otlprecv.RecordedSpan) bool { return s.Name == p && s.Service == "hangar-executor" }) {
					return false
				}
			}
			return true
		}, wait)
		if err != nil {
			in := otlprecv.ByTrace(spans, m[1])
			var names []string
			for _, s := range in {
				names = append(names, s.Service+"/"+s.Name)
			}
			t.Errorf("trace %s: want spans of %v and executor spans %v; got %q", m[1], services, phases, names)
		}
	})
}

// runSecret is the secret variable of testSecret's run.
const runSecret = "hunter2-Zq8xW3vR-e2e-secret"

func (x *execEnv) testSecret(t *testing.T) {
	gate := harness.RandomName("secret-gate-")
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(x.extraDir, gate), nil, 0o644) })
	commands := []string{
		`echo "plain:$S"`,
		// One line written in three pieces by three processes.
		`printf 'split:'; printf %s "$S" | head -c 5; printf %s "$S" | tail -c +6; echo`,
		`printf 'b64:'; printf %s "$S" | busybox base64`,
		// Split over two commands: the runtime echoes the second one on
		// stderr between the two halves.
		`printf 'two-commands:'; printf %s "$S" | head -c 5`,
		`printf %s "$S" | tail -c +6; echo`,
		// Split on stdout with a line on stderr in between.
		`printf 'interleaved-split:'; printf %s "$S" | head -c 5; sleep 1; echo stderr-line >&2; sleep 1; printf %s "$S" | tail -c +6; echo`,
		// The halves on stdout and stderr: whole on the one channel.
		`printf 'across-streams:'; printf %s "$S" | head -c 5; printf %s "$S" | tail -c +6 >&2; echo`,
		`echo "masked-env:$E2E_MASKED"`,
		"echo live-marker",
		// Held until the test has seen the live chunks.
		waitFile(gate),
		"echo after-gate",
	}
	spec := harness.Task(runnerImage, commands...)
	spec.Env = []harness.EnvVar{{Name: "S", Value: runSecret, Secret: true}}
	runID, sub := x.submit(t, "pool-a", spec, true)
	prefix := "runs/" + runID + "/"

	// Live chunks reach S3 while the run goes on.
	var live string
	deadline := time.Now().Add(2 * wait)
	for {
		live = ""
		for _, k := range x.s3.Keys(t, prefix+"chunks/") {
			b, _, _ := x.s3.Get(t, k)
			live += string(b)
		}
		if strings.Contains(live, "live-marker") {
			break
		}
		select {
		case <-sub.Done():
			t.Fatalf("the run ended before its live chunks showed \"live-marker\" (chunks so far %q):\n%s", live, sub.Output())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no live chunk with \"live-marker\" under %s within %s; chunks so far:\n%s", prefix, 2*wait, live)
		}
	}
	if _, _, ok := x.s3.Get(t, prefix+"log"); ok {
		t.Errorf("the final log object exists while the run still waits")
	}
	// While it runs, its workspace and container exist (so that "nothing left
	// behind" checks the right places).
	if ws := append(x.execA.Workspaces(t), x.execB.Workspaces(t)...); len(ws) == 0 {
		t.Errorf("no workspace in the executors' work dirs while run %s runs", runID)
	}
	if got := harness.ManagedLeftovers(t, map[string]bool{runID: true}); len(got) == 0 {
		t.Errorf("no container or volume labelled hangar.managed=true and hangar.run-id=%s while the run runs", runID)
	}
	if err := os.WriteFile(filepath.Join(x.extraDir, gate), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := sub.WaitExit(3 * time.Minute); code != 0 {
		t.Errorf("hangarctl run submit --follow: exit code %d, want 0:\n%s", code, sub.Output())
	}
	fin := finished(t, x.obsA, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Errorf("run %s: %s %q, want finished", runID, fin.GetOutcome(), fin.GetReason())
	}
	final := x.storedLog(t, runID, fin)
	chunks := x.s3.Keys(t, prefix+"chunks/")
	live = ""
	for _, k := range chunks {
		b, _, _ := x.s3.Get(t, k)
		live += string(b)
	}
	t.Logf("final log (%d bytes), %d live chunks", len(final), len(chunks))

	b64 := base64.StdEncoding.EncodeToString([]byte(runSecret))
	forbidden := map[string]string{
		"the secret":                        runSecret,
		"the secret's base64":               b64,
		"the secret's base64 (stable part)": b64[:len(b64)-4],
		"the masked executor variable":      maskedEnvValue,
	}
	var leaks []string
	for what, s := range forbidden {
		for where, content := range map[string]string{
			"final log object": final,
			"live chunks":      live, "live log of --follow": sub.Output(),
		} {
			if strings.Contains(content, s) {
				leaks = append(leaks, fmt.Sprintf("the %s contains %s", where, what))
			}
		}
	}
	if len(leaks) > 0 {
		slices.Sort(leaks)
		t.Errorf("secret material reached S3 or a reader:\n  %s\nfinal log object:\n%s", strings.Join(leaks, "\n  "), final)
	}
	// The run's stdout and stderr are one channel (ADR 0020): the log has
	// each "+ command" trace on its own line before the command's output,
	// and a secret written whole on the channel, in parts by several
	// processes or in halves to stdout and stderr, masked whole.
	for _, l := range []string{"plain:******", "split:******", "b64:******", "across-streams:******", "masked-env:******", "after-gate"} {
		if !hasLine(final, l) {
			t.Errorf("the final log lacks the line %q (the mask where the secret was)", l)
		}
	}
	// Bytes written between the two halves of a secret (the runtime's trace
	// of the second command, a stderr line) are on the channel between
	// them, as on a terminal: the log shows what a terminal shows, the
	// halves apart, the secret never whole.
	for what, want := range map[string]string{
		"secret split over two commands": "two-commands:" + runSecret[:5] + "+ " + commands[4] + "\n" + runSecret[5:] + "\n",
		"secret split by a stderr line":  "interleaved-split:" + runSecret[:5] + "stderr-line\n" + runSecret[5:] + "\n",
	} {
		if !strings.Contains(final, want) {
			t.Errorf("the final log lacks the %s as a terminal shows it, %q", what, want)
		}
	}
	if !strings.HasPrefix(final, live) {
		t.Errorf("the live chunks are not a prefix of the final log:\nlive:\n%s\nfinal:\n%s", live, final)
	}

	t.Run("hangarctl logs", func(t *testing.T) {
		r := harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, "logs", "--dir", x.cp.Dir, runID)
		if r.Code != 0 || r.Stdout != final {
			t.Errorf("hangarctl logs %s: want exit 0 and the stored log (%d bytes): %s", runID, len(final), r)
		}
		r = harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, "logs", "--dir", x.cp.Dir, "--verify", runID)
		if r.Code != 0 || r.Stdout != final || !strings.Contains(r.Stderr, fmt.Sprintf("verified: %d bytes", len(final))) {
			t.Errorf("hangarctl logs --verify %s: %s", runID, r)
		}
	})
}

func (x *execEnv) testWorkerSettings(t *testing.T) {
	spec := harness.Task(runnerImage,
		`echo "visible=$E2E_VISIBLE"`,
		`echo "masked=$E2E_MASKED"`,
		`echo "masked-len=${#E2E_MASKED}"`,
		"cat /e2e-extra/hello.txt",
		"ip -4 -o addr show",
	)
	runID, sub := x.submit(t, "pool-a", spec, true)
	if code := sub.WaitExit(3 * time.Minute); code != 0 {
		t.Errorf("hangarctl run submit --follow: exit code %d, want 0:\n%s", code, sub.Output())
	}
	fin := finished(t, x.obsA, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("run %s: %s %q, want finished", runID, fin.GetOutcome(), fin.GetReason())
	}
	log := x.storedLog(t, runID, fin)

	t.Run("HANGAR_WHITELIST_ENVS", func(t *testing.T) {
		if !hasLine(log, "visible="+visibleEnvValue) {
			t.Errorf("the run does not see E2E_VISIBLE=%s:\n%s", visibleEnvValue, log)
		}
	})
	t.Run("HANGAR_MASK_ENVS", func(t *testing.T) {
		if !hasLine(log, fmt.Sprintf("masked-len=%d", len(maskedEnvValue))) {
			t.Errorf("the run does not get E2E_MASKED (want its length %d):\n%s", len(maskedEnvValue), log)
		}
		if strings.Contains(log, maskedEnvValue) || !hasLine(log, "masked=******") {
			t.Errorf("E2E_MASKED is not masked in the stored log:\n%s", log)
		}
	})
	t.Run("HANGAR_WORKER_EXTRA_MOUNTS", func(t *testing.T) {
		if !hasLine(log, "hello from the host's extra mount") {
			t.Errorf("the run did not read the host file through the extra mount:\n%s", log)
		}
	})
	t.Run("HANGAR_WORKER_NETWORK", func(t *testing.T) {
		var addrs []string
		inSubnet := false
		for _, m := range regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`).FindAllStringSubmatch(log, -1) {
			addrs = append(addrs, m[1])
			if ip := net.ParseIP(m[1]); ip != nil && x.subnet.Contains(ip) {
				inSubnet = true
			}
		}
		if !inSubnet {
			t.Errorf("the run's addresses %v are not in network %s's subnet %s:\n%s", addrs, x.network, x.subnet, log)
		}
	})
}

func (x *execEnv) testPrivateVCS(t *testing.T) {
	spec := harness.Task(runnerImage, "pwd", "cat main.tf")
	spec.Source = &harness.Source{URL: "https://vcs-e2e/acme/infra.git", Ref: "main", ProjectRoot: "infra/prod"}
	runID, sub := x.submit(t, "pool-a", spec, true)
	if code := sub.WaitExit(3 * time.Minute); code != 0 {
		t.Errorf("hangarctl run submit --follow: exit code %d, want 0:\n%s", code, sub.Output())
	}
	fin := finished(t, x.obsA, runID)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("run %s: %s %q, want finished", runID, fin.GetOutcome(), fin.GetReason())
	}
	log := x.storedLog(t, runID, fin)
	if !hasLine(log, "# private-vcs-file: prod stack") {
		t.Errorf("the run did not cat infra/prod/main.tf of the private VCS repository:\n%s", log)
	}
	if !hasLine(log, "/workspace/infra/prod") {
		t.Errorf("the run does not run in the project root /workspace/infra/prod:\n%s", log)
	}
	if !strings.Contains(log, x.vcsURL) {
		t.Logf("the log does not name the mapped endpoint %s (informational):\n%s", x.vcsURL, log)
	}
}

func (x *execEnv) testCancel(t *testing.T) {
	spec := harness.Task(runnerImage, "echo sleeping", "sleep 300")
	runID, sub := x.submit(t, "pool-a", spec, true)
	// Running: its output reached the live log.
	sub.WaitOutput(regexp.MustCompile(`(?m)^sleeping$`), 2*wait)
	sent := time.Now()
	r := harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, "run", "cancel", "--dir", x.cp.Dir, "--pool", "pool-a", runID)
	if r.Code != 0 {
		t.Fatalf("hangarctl run cancel: %s", r)
	}
	fin := finished(t, x.obsA, runID)
	t.Logf("stopped %s after the cancel", time.Since(sent).Round(100*time.Millisecond))
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_STOPPED || !strings.Contains(fin.GetReason(), "cancel") {
		t.Errorf("run %s: outcome %s %q, want stopped with a reason saying it was cancelled", runID, fin.GetOutcome(), fin.GetReason())
	}
	if code := sub.WaitExit(3 * time.Minute); code != 1 {
		t.Errorf("hangarctl run submit --follow of a stopped run: exit code %d, want 1:\n%s", code, sub.Output())
	}
	if !strings.Contains(sub.Output(), "[event] stopped") {
		t.Errorf("hangarctl run submit --follow does not say the run stopped:\n%s", sub.Output())
	}
	expectEvents(t, x.obsA, runID, "received", "admitted", "started", "phase:prepare", "phase:perform", "finished")
	x.storedLog(t, runID, fin)
}

// poolB starts the only executor of pool-b with extra settings, and waits until
// the gateway lists it alone. It is stopped at the end of the subtest.
func (x *execEnv) poolB(t *testing.T, id string, extra ...string) *harness.Executor {
	t.Helper()
	env := append([]string{"HANGAR_EXECUTOR_SLOTS=2", "HANGAR_CANCEL_GRACE=2s"}, x.otlpEnv...)
	e := harness.StartExecutor(t, x.executor, id, x.gwB.GRPCAddr, x.logship.GRPCAddr, append(env, extra...)...)
	waitExecutors(t, x.obsB, id)
	t.Cleanup(func() {
		if ws := e.Workspaces(t); len(ws) > 0 {
			t.Errorf("executor %s: its work dir still holds workspaces %q", id, ws)
		}
		e.Shutdown()
		if out := e.Output(); strings.Contains(out, runSecret) || strings.Contains(out, maskedEnvValue) {
			t.Errorf("executor %s's own log contains a secret value", id)
		}
	})
	return e
}

// runB submits spec to pool-b, follows it, and returns its final event and
// the events; the run must have started on executor id.
func (x *execEnv) runB(t *testing.T, id string, spec *harness.RunSpec) (string, *eventv1.RunFinished, *harness.Process) {
	t.Helper()
	runID, sub := x.submit(t, "pool-b", spec, true)
	fin := finished(t, x.obsB, runID)
	sub.WaitExit(3 * time.Minute)
	if got := startedOn(x.obsB.RunEvents(runID)); got != id {
		t.Errorf("run %s started on %q, want %s:\n%s", runID, got, id, describe(x.obsB.RunEvents(runID)))
	}
	return runID, fin, sub
}

func (x *execEnv) testBadRuntime(t *testing.T) {
	e := x.poolB(t, "exec-nope", "HANGAR_EXECUTOR_RUNTIME=docker", "HANGAR_WORKER_RUNTIME=nope")
	for i := range 2 {
		runID, fin, sub := x.runB(t, e.ID, harness.Task(runnerImage, "echo never"))
		if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(fin.GetReason(), `"nope"`) {
			t.Errorf("run %d (%s) with HANGAR_WORKER_RUNTIME=nope: outcome %s %q, want failed with a reason naming the runtime \"nope\"",
				i+1, runID, fin.GetOutcome(), fin.GetReason())
		}
		if sub.ExitCode() != 1 {
			t.Errorf("hangarctl run submit --follow of a failed run: exit code %d, want 1:\n%s", sub.ExitCode(), sub.Output())
		}
		log := x.storedLog(t, runID, fin)
		if hasLine(log, "never") {
			t.Errorf("the run's command ran although its container runtime does not exist:\n%s", log)
		}
		select {
		case <-e.Done():
			t.Fatalf("executor %s exited (code %d) after a run failed for its container runtime", e.ID, e.ExitCode())
		default:
		}
	}
	// Still attached, taking work.
	waitExecutors(t, x.obsB, e.ID)
}

func (x *execEnv) testLogsTimeout(t *testing.T) {
	e := x.poolB(t, "exec-logs-timeout", "HANGAR_EXECUTOR_RUNTIME=docker", "HANGAR_LOGS_TIMEOUT=3s")
	runID, fin, sub := x.runB(t, e.ID, harness.Task(runnerImage, "echo started", "sleep 60", "echo not-reached"))
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_TIMED_OUT || !strings.Contains(fin.GetReason(), "no output for 3s") {
		t.Errorf("run %s: outcome %s %q, want timed_out with a reason naming the no-output timeout of 3s", runID, fin.GetOutcome(), fin.GetReason())
	}
	if sub.ExitCode() != 1 {
		t.Errorf("hangarctl run submit --follow of a timed-out run: exit code %d, want 1", sub.ExitCode())
	}
	if log := x.storedLog(t, runID, fin); hasLine(log, "not-reached") {
		t.Errorf("the run went on after its no-output timeout:\n%s", log)
	}
}

func (x *execEnv) testRunTimeout(t *testing.T) {
	e := x.poolB(t, "exec-run-timeout", "HANGAR_EXECUTOR_RUNTIME=docker", "HANGAR_RUN_TIMEOUT=5s")
	runID, fin, sub := x.runB(t, e.ID, harness.Task(runnerImage, "for i in $(seq 60); do echo tick $i; sleep 1; done", "echo not-reached"))
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_TIMED_OUT || !strings.Contains(fin.GetReason(), "run timeout of 5s") {
		t.Errorf("run %s: outcome %s %q, want timed_out with a reason naming the run timeout of 5s", runID, fin.GetOutcome(), fin.GetReason())
	}
	if sub.ExitCode() != 1 {
		t.Errorf("hangarctl run submit --follow of a timed-out run: exit code %d, want 1", sub.ExitCode())
	}
	if log := x.storedLog(t, runID, fin); hasLine(log, "tick 60") || hasLine(log, "not-reached") {
		t.Errorf("the run went on after its run timeout:\n%s", log)
	}
}

func (x *execEnv) testRegistry(t *testing.T) {
	const user, password = "hangar-e2e", "Pa55-w0rd-e2e"
	reg := harness.StartRegistry(t, user, password)
	image, configDir := reg.Push(t, runnerImage, "hangar-e2e/private:"+strings.TrimPrefix(harness.RandomName("v"), "v"))
	spec := harness.Task(image, "echo pulled-and-ran")

	t.Run("without HANGAR_DOCKER_CONFIG_DIR", func(t *testing.T) {
		e := x.poolB(t, "exec-no-creds", "HANGAR_EXECUTOR_RUNTIME=docker")
		runID, fin, _ := x.runB(t, e.ID, spec)
		if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(fin.GetReason(), "pull image "+image) {
			t.Errorf("run %s: outcome %s %q, want failed with \"pull image %s: ...\"", runID, fin.GetOutcome(), fin.GetReason(), image)
		}
		if strings.Contains(fin.GetReason(), password) {
			t.Errorf("the reason shows the registry password")
		}
	})
	t.Run("with HANGAR_DOCKER_CONFIG_DIR", func(t *testing.T) {
		e := x.poolB(t, "exec-registry", "HANGAR_EXECUTOR_RUNTIME=docker", "HANGAR_DOCKER_CONFIG_DIR="+configDir)
		runID, fin, sub := x.runB(t, e.ID, spec)
		if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
			t.Errorf("run %s: outcome %s %q, want finished", runID, fin.GetOutcome(), fin.GetReason())
		}
		if sub.ExitCode() != 0 {
			t.Errorf("hangarctl run submit --follow: exit code %d, want 0:\n%s", sub.ExitCode(), sub.Output())
		}
		if log := x.storedLog(t, runID, fin); !hasLine(log, "pulled-and-ran") {
			t.Errorf("stored log lacks the run's output:\n%s", log)
		}
		if strings.Contains(e.Output(), password) {
			t.Errorf("executor %s's own log shows the registry password", e.ID)
		}
	})
}

func (x *execEnv) testProcessRuntime(t *testing.T) {
	e := x.poolB(t, "exec-process", "HANGAR_EXECUTOR_RUNTIME=process")
	spec := harness.Task(runnerImage, `echo "process runtime says $GREETING"`, "echo \"secret=$S\"")
	spec.Env = []harness.EnvVar{{Name: "GREETING", Value: "hello"}, {Name: "S", Value: runSecret, Secret: true}}
	runID, fin, sub := x.runB(t, e.ID, spec)
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
		t.Errorf("run %s: outcome %s exit %d %q, want finished, 0", runID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason())
	}
	if sub.ExitCode() != 0 {
		t.Errorf("hangarctl run submit --follow: exit code %d, want 0:\n%s", sub.ExitCode(), sub.Output())
	}
	expectEvents(t, x.obsB, runID, "received", "admitted", "started", "phase:prepare", "phase:perform", "finished")
	log := x.storedLog(t, runID, fin)
	if !hasLine(log, "process runtime says hello") || !hasLine(log, "secret=******") || strings.Contains(log, runSecret) {
		t.Errorf("stored log of the process runtime's run:\n%s", log)
	}
}
