package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// foStack is what the fault-injection tests (TestFailover, TestSoak) share:
// a control plane, an S3-compatible server, the policy service (no policy:
// every run allowed) and logship. Each case has its own pool with its own
// embedded broker (`hangarctl broker --data DIR`), gateways and executors, so
// that the cases can run side by side and a fault in one touches no other.
type foStack struct {
	cp          *harness.ControlPlane
	s3          *harness.S3
	policy      *harness.Policy
	logship     *harness.Logship
	gatewayBin  string
	executorBin string

	// suffix makes this process's executor ids its own (see exec).
	suffix string

	mu     sync.Mutex
	runIDs map[string]bool
}

// exec is the id of this process's executor name: the name with a suffix of
// this test process. An executor reaps, at its start, every container on the
// engine labelled with its id (ADR 0017: two executors must not share an id
// on one engine), so two test processes on one Docker engine (two worktrees,
// CI and a developer) that both start an "exec-2" would remove each other's
// run containers: a run then ends with exit code 137 (SIGKILL), as
// gateway_killed_mid-run's leased run once did.
func (s *foStack) exec(name string) string { return name + "-" + s.suffix }

func newFailoverStack(t *testing.T) *foStack {
	t.Helper()
	harness.RequireDocker(t)
	if err := bins.Build("executor", "logship"); err != nil {
		t.Fatal(err)
	}
	s := &foStack{runIDs: map[string]bool{}, gatewayBin: bins.Path(t, "gateway"), executorBin: bins.Path(t, "executor"), suffix: newRunID()[len("e2e-"):][:6]}
	// Last resort, after every executor stopped: nothing of our runs stays on
	// the engine even when a test failed half-way.
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		harness.RemoveManaged(t, s.runIDs)
	})
	harness.BusyboxImage(t, runnerImage)
	s.cp = harness.NewControlPlane(t, bins.Path(t, "hangarctl"))
	s.s3 = harness.StartS3(t, "hangar-logs")
	s.policy = harness.StartPolicy(t, bins.Path(t, "policy"), "")
	s.logship = harness.StartLogship(t, bins.Path(t, "logship"), s.s3, "HANGAR_LOGSHIP_CHUNK_INTERVAL=300ms")
	return s
}

// foPool is one pool of a case: its broker, token and key, and an observer
// of everything it publishes (a persistent session, across broker restarts).
type foPool struct {
	*foStack
	name   string
	broker *harness.EmbeddedBroker
	token  string
	keyB64 string
	obs    *harness.Observer

	mu   sync.Mutex
	runs []string
}

func (s *foStack) pool(t *testing.T, name string) *foPool {
	t.Helper()
	b := s.cp.StartEmbeddedBrokerData(t)
	key, csr := s.cp.Keygen(t, t.TempDir())
	p := &foPool{foStack: s, name: name, broker: b}
	p.token = s.cp.CreatePool(t, name, csr, b.URL)
	p.keyB64 = harness.KeyEnv(t, key)
	p.obs = harness.Observe(t, b.URL, s.cp.Dir, name)
	return p
}

// gateway is a gateway of the pool with worker id id (its MQTT client id, so
// its persistent session, follows from it), heartbeats every second, and
// extra settings.
func (p *foPool) gateway(t *testing.T, id string, extra ...string) *harness.Gateway {
	t.Helper()
	env := append([]string{"HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=" + id}, extra...)
	g := harness.NewGateway(t, p.gatewayBin, p.token, p.keyB64, p.policy.GRPCAddr, env...)
	g.Service.Name = "gateway-" + strings.TrimPrefix(id, "gw-")
	return g
}

// executorEnv is the environment of an executor of a failover case. The
// admission thresholds are off: a busy CI host must not make an executor
// refuse work, which would be a timing deciding the test.
func executorEnv(runtime string, slots int, extra ...string) []string {
	return append([]string{
		"HANGAR_EXECUTOR_SLOTS=" + strconv.Itoa(slots),
		"HANGAR_EXECUTOR_RUNTIME=" + runtime,
		"HANGAR_CANCEL_GRACE=2s",
		"HANGAR_MIN_FREE_DISK_MB=0",
		"HANGAR_MIN_FREE_MEMORY_MB=0",
	}, extra...)
}

// submitFile publishes the spec in specFile to the pool with a fresh run id
// (hangarctl run submit, without --follow) and returns the id.
func (p *foPool) submitFile(t testing.TB, specFile string) string {
	t.Helper()
	runID := newRunID()
	p.track(runID)
	r := harness.Run(t, 2*time.Minute, nil, p.cp.Ctl, "run", "submit", "--dir", p.cp.Dir, "--pool", p.name, "--spec", specFile, "--run-id", runID)
	if r.Code != 0 || !strings.Contains(r.Stdout, "run "+runID+" submitted to pool "+p.name) {
		t.Fatalf("hangarctl run submit: %s", r)
	}
	return runID
}

// submitQuiet is submitFile for goroutines other than the test's: it
// returns an error instead of failing the test.
func (p *foPool) submitQuiet(specFile string) (string, error) {
	runID := newRunID()
	p.track(runID)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.cp.Ctl, "run", "submit", "--dir", p.cp.Dir, "--pool", p.name, "--spec", specFile, "--run-id", runID)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "run "+runID+" submitted to pool "+p.name) {
		return "", fmt.Errorf("hangarctl run submit --run-id %s: %v\n%s", runID, err, out)
	}
	return runID, nil
}

func (p *foPool) submit(t testing.TB, spec string) string {
	t.Helper()
	return p.submitFile(t, harness.WriteFile(t, t.TempDir(), "spec.json", spec))
}

func (p *foPool) track(runID string) {
	p.mu.Lock()
	p.runs = append(p.runs, runID)
	p.mu.Unlock()
	p.foStack.mu.Lock()
	p.foStack.runIDs[runID] = true
	p.foStack.mu.Unlock()
}

func (p *foPool) runSet() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := map[string]bool{}
	for _, id := range p.runs {
		m[id] = true
	}
	return m
}

// waitAttached waits for a heartbeat of gateway gw, sent after since, that
// lists exactly the executors ids.
func (p *foPool) waitAttached(t *testing.T, gw string, since time.Time, ids ...string) {
	t.Helper()
	want := slices.Clone(ids)
	slices.Sort(want)
	p.obs.WaitHeartbeat(2*wait, fmt.Sprintf("heartbeat of %s after %s listing executors %v", gw, since.Format(time.TimeOnly), want), func(hb *eventv1.Heartbeat) bool {
		if hb.GetWorkerId() != gw || hb.GetTimeUnixMs() < since.UnixMilli() {
			return false
		}
		var got []string
		for _, e := range hb.GetExecutors() {
			got = append(got, e.GetExecutorId())
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

// waitKind waits for an event of the run of kind ("admitted", "started",
// "phase:NAME", "unconfirmed", "finished", as kinds() names them).
func (p *foPool) waitKind(t *testing.T, runID, kind string, timeout time.Duration) *eventv1.Event {
	t.Helper()
	return p.obs.WaitEvent(timeout, kind+" event of run "+runID, func(ev *eventv1.Event) bool {
		return ev.GetRunId() == runID && slices.Equal(kinds([]*eventv1.Event{ev}), []string{kind})
	})
}

// final waits for the run's final event (finished or denied).
func (p *foPool) final(t *testing.T, runID string, timeout time.Duration) *eventv1.RunFinished {
	t.Helper()
	return p.waitKind(t, runID, "finished", timeout).GetFinished()
}

// runReport is what checkRun found about one run.
type runReport struct {
	final     *eventv1.Event
	events    []*eventv1.Event // deduplicated, by sequence
	starts    []string         // executors of the started events
	redeliver int              // deliveries beyond the first of an event id
	problems  []string
}

// inspectRun checks the invariants every run keeps whatever the fault: each
// event id has one content (a re-publication is a copy, never a different
// event), one producer (gateway) per event id, sequences 1..n without gap,
// exactly one final event and it is the last, wantStarts started events, and
// no phase run twice under one lease.
func (p *foPool) inspectRun(runID string, wantStarts int) runReport {
	var r runReport
	byID := map[string]harness.Delivery{}
	for _, d := range p.obs.RunDeliveries(runID) {
		id := d.Event.GetEventId()
		first, ok := byID[id]
		if !ok {
			byID[id] = d
			continue
		}
		r.redeliver++
		if a, b := harness.DescribeEvent(first.Event), harness.DescribeEvent(d.Event); a != b {
			r.problems = append(r.problems, fmt.Sprintf("event id %s was published with two contents: %s / %s", id, a, b))
		}
		if a, b := first.Event.GetWorkerId(), d.Event.GetWorkerId(); a != b {
			r.problems = append(r.problems, fmt.Sprintf("event id %s was published by two gateways, %s and %s", id, a, b))
		}
	}
	r.events = p.obs.RunEvents(runID)
	var finals []*eventv1.Event
	phases := map[string]int{}
	for i, ev := range r.events {
		if ev.GetSequence() != uint64(i+1) {
			r.problems = append(r.problems, fmt.Sprintf("sequences are not 1..n: event %d has sequence %d", i+1, ev.GetSequence()))
			break
		}
	}
	for _, ev := range r.events {
		switch k := ev.GetKind().(type) {
		case *eventv1.Event_Finished, *eventv1.Event_Denied:
			finals = append(finals, ev)
		case *eventv1.Event_Started:
			r.starts = append(r.starts, k.Started.GetExecutorId())
			clear(phases)
		case *eventv1.Event_Phase:
			phases[k.Phase.GetPhase()]++
			if phases[k.Phase.GetPhase()] == 2 {
				r.problems = append(r.problems, fmt.Sprintf("phase %s reported twice under one lease", k.Phase.GetPhase()))
			}
		}
	}
	switch {
	case len(finals) != 1:
		r.problems = append(r.problems, fmt.Sprintf("%d final events, want exactly 1", len(finals)))
	default:
		r.final = finals[0]
		if last := r.events[len(r.events)-1]; last != r.final {
			r.problems = append(r.problems, "an event comes after the final event: "+harness.DescribeEvent(last))
		}
	}
	if len(r.starts) != wantStarts {
		r.problems = append(r.problems, fmt.Sprintf("%d started events (on %v), want %d", len(r.starts), r.starts, wantStarts))
	}
	return r
}

// checkRun is inspectRun failing the test on a problem; it returns the
// run's final result.
func (p *foPool) checkRun(t *testing.T, runID string, wantStarts int) runReport {
	t.Helper()
	r := p.inspectRun(runID, wantStarts)
	if len(r.problems) > 0 {
		t.Errorf("run %s:\n  %s\nevents:\n%s", runID, strings.Join(r.problems, "\n  "), describe(r.events))
	}
	return r
}

// runLog reads the final log object of a run from S3: the key in its final
// event, which must be wantKey.
func (s *foStack) runLog(t *testing.T, runID string, fin *eventv1.RunFinished, wantKey string) string {
	t.Helper()
	if fin.GetLogKey() != wantKey {
		t.Errorf("run %s: final event's log key %q, want %q", runID, fin.GetLogKey(), wantKey)
		return ""
	}
	body, _, ok := s.s3.Get(t, wantKey)
	if !ok {
		t.Errorf("run %s: no log object %s in S3", runID, wantKey)
	}
	return string(body)
}

// expectLines checks that the log has each line, in this order.
func expectLines(t *testing.T, what, log string, lines ...string) {
	t.Helper()
	last := -1
	for _, l := range lines {
		i := lineIndex(log, l)
		if i < 0 || i < last {
			t.Errorf("%s: line %q missing or out of order:\n%s", what, l, log)
			return
		}
		last = i
	}
}

// containers lists the containers of a run ("NAME STATE"), running or not.
func containers(t testing.TB, runID string) []string {
	t.Helper()
	out := harness.MustDocker(t, "ps", "-a", "--filter", "label=hangar.managed=true", "--filter", "label=hangar.run-id="+runID,
		"--format", "{{.Names}} {{.State}}")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// waitContainerRunning waits until the run has a running container and
// returns its name.
func waitContainerRunning(t *testing.T, runID string) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		for _, c := range containers(t, runID) {
			if f := strings.Fields(c); len(f) == 2 && f[1] == "running" {
				return f[0]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: no running container within %s (containers: %q)", runID, wait, containers(t, runID))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNothingLeft waits (generously: removal by the engine takes a moment)
// until no container or volume labelled hangar.managed=true belongs to runs,
// and fails the test if something stays.
func waitNothingLeft(t *testing.T, runs map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		left := harness.ManagedLeftovers(t, runs)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("left on the Docker engine %s after the runs ended (labels hangar.managed=true):\n%s", wait, strings.Join(left, "\n"))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// leasesFile reads an executor's state file (hangar-executor-<id>.leases.json):
// lease id -> {run_id, epoch}.
func leasesFile(t *testing.T, workDir, id string) map[string]struct {
	RunID string `json:"run_id"`
	Epoch uint64 `json:"epoch"`
} {
	t.Helper()
	out := map[string]struct {
		RunID string `json:"run_id"`
		Epoch uint64 `json:"epoch"`
	}{}
	b, err := os.ReadFile(filepath.Join(workDir, "hangar-executor-"+id+".leases.json"))
	if err != nil {
		t.Errorf("executor %s's state file: %v", id, err)
		return out
	}
	var st struct {
		Leases json.RawMessage `json:"leases"`
	}
	if err := json.Unmarshal(b, &st); err != nil || json.Unmarshal(st.Leases, &out) != nil {
		t.Errorf("executor %s's state file %s: %v", id, b, err)
	}
	return out
}

func isOutcome(fin *eventv1.RunFinished, o eventv1.Outcome) bool { return fin.GetOutcome() == o }
