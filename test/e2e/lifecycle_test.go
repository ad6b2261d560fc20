package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// TestWorkerLifecycle is issue 5's "workers and their lifecycle" over the real
// binaries: `hangarctl workers` lists a pool's workers with their state, slots
// and tags; `worker drain` / `undrain` stop and resume giving an executor work
// (a drained executor never counts as free capacity); the first SIGTERM drains
// an executor (its run finishes, it takes nothing new, then exits), and `pool
// cycle` makes every executor exit once idle.
func TestWorkerLifecycle(t *testing.T) {
	s := newFailoverStack(t)
	p := s.pool(t, "lifecycle")
	gw := p.gateway(t, "gw-1").Start(t)
	since := time.Now()
	ex := harness.NewExecutor(t, s.executorBin, "exec-1", "", gw.GRPCAddr, s.logship.GRPCAddr,
		executorEnv("process", 2, "HANGAR_METADATA_zone=z1")...).Start(t)
	p.waitAttached(t, "gw-1", since, "exec-1")

	ctl := func(args ...string) harness.Result {
		t.Helper()
		return harness.Run(t, time.Minute, nil, p.cp.Ctl, args...)
	}
	executorState := func(state eventv1.WorkerState) {
		t.Helper()
		after := time.Now().UnixMilli()
		p.obs.WaitHeartbeat(2*wait, "exec-1 "+state.String(), func(hb *eventv1.Heartbeat) bool {
			for _, e := range hb.GetExecutors() {
				if hb.GetTimeUnixMs() >= after && e.GetExecutorId() == "exec-1" && e.GetState() == state {
					return true
				}
			}
			return false
		})
	}

	t.Run("workers lists the pool", func(t *testing.T) {
		r := ctl("workers", "--dir", p.cp.Dir, "--pool", p.name, "--wait", "3s")
		if r.Code != 0 {
			t.Fatalf("hangarctl workers: %s", r)
		}
		for _, want := range []string{"gw-1", "gateway", "exec-1", "executor", "0/2", "zone=z1"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("hangarctl workers output lacks %q:\n%s", want, r.Stdout)
			}
		}
	})

	t.Run("drain and undrain", func(t *testing.T) {
		if r := ctl("worker", "drain", "--dir", p.cp.Dir, "--pool", p.name, "exec-1"); r.Code != 0 {
			t.Fatalf("worker drain: %s", r)
		}
		executorState(eventv1.WorkerState_WORKER_STATE_DRAINED)
		runID := p.submit(t, harness.Task(runnerImage, "echo after-undrain").JSON())
		p.waitKind(t, runID, "admitted", wait)
		// Two heartbeats later the run is still waiting: a drained executor is
		// no free capacity.
		executorState(eventv1.WorkerState_WORKER_STATE_DRAINED)
		executorState(eventv1.WorkerState_WORKER_STATE_DRAINED)
		for _, k := range kinds(p.obs.RunEvents(runID)) {
			if k == "started" {
				t.Fatalf("run %s started on a drained executor", runID)
			}
		}
		if r := ctl("workers", "--dir", p.cp.Dir, "--pool", p.name, "--wait", "2s"); !strings.Contains(r.Stdout, "drained") {
			t.Errorf("hangarctl workers does not show exec-1 drained:\n%s", r.Stdout)
		}
		if r := ctl("worker", "undrain", "--dir", p.cp.Dir, "--pool", p.name, "exec-1"); r.Code != 0 {
			t.Fatalf("worker undrain: %s", r)
		}
		if fin := p.final(t, runID, 2*wait); !isOutcome(fin, eventv1.Outcome_OUTCOME_FINISHED) {
			t.Fatalf("run %s after undrain: %s %q", runID, fin.GetOutcome(), fin.GetReason())
		}
		p.checkRun(t, runID, 1)
	})

	t.Run("first SIGTERM drains, the run finishes, the executor exits", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "go")
		runID := p.submit(t, harness.Task(runnerImage, "echo waiting", "while [ ! -e "+marker+" ]; do sleep 0.1; done", "echo drained-run-done").JSON())
		p.waitKind(t, runID, "phase:perform", 2*wait)
		if err := syscall.Kill(ex.Pid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		executorState(eventv1.WorkerState_WORKER_STATE_DRAINED)
		other := p.submit(t, harness.Task(runnerImage, "echo never-here").JSON())
		p.waitKind(t, other, "admitted", wait)
		harness.WriteFile(t, filepath.Dir(marker), filepath.Base(marker), "")
		if fin := p.final(t, runID, 2*wait); !isOutcome(fin, eventv1.Outcome_OUTCOME_FINISHED) {
			t.Fatalf("the run of a draining executor must finish: %s %q", fin.GetOutcome(), fin.GetReason())
		}
		if code := ex.Process.WaitExit(2 * wait); code != 0 {
			t.Fatalf("a drained executor exits 0 once idle; got %d", code)
		}
		for _, k := range kinds(p.obs.RunEvents(other)) {
			if k == "started" {
				t.Fatalf("run %s started on a draining executor", other)
			}
		}
		// A new executor takes the waiting run.
		since := time.Now()
		harness.NewExecutor(t, s.executorBin, "exec-2", t.TempDir(), gw.GRPCAddr, s.logship.GRPCAddr, executorEnv("process", 1)...).Start(t)
		p.waitAttached(t, "gw-1", since, "exec-2")
		if fin := p.final(t, other, 2*wait); !isOutcome(fin, eventv1.Outcome_OUTCOME_FINISHED) {
			t.Fatalf("run %s: %s %q", other, fin.GetOutcome(), fin.GetReason())
		}
	})

	t.Run("pool cycle", func(t *testing.T) {
		since := time.Now()
		ex3 := harness.NewExecutor(t, s.executorBin, "exec-3", t.TempDir(), gw.GRPCAddr, s.logship.GRPCAddr, executorEnv("process", 1)...).Start(t)
		p.waitAttached(t, "gw-1", since, "exec-3") // exec-2 stopped with the previous subtest
		if r := ctl("pool", "cycle", "--dir", p.cp.Dir, p.name); r.Code != 0 {
			t.Fatalf("pool cycle: %s", r)
		}
		if code := ex3.Process.WaitExit(2 * wait); code != 0 {
			t.Fatalf("a cycled executor exits 0 once idle; got %d", code)
		}
		p.waitAttached(t, "gw-1", time.Now())
	})
}
