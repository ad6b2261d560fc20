package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// TestReadopt is issue 12's "Shown by" for runs that survive an executor
// restart, over the real binaries and the Docker engine: a run prints a
// numbered line every 200 ms; its executor is SIGKILLed in the middle and
// started again (same id, same work dir) while the run's lease is current.
// The restarted executor re-adopts the run's container: the run ends
// finished with exit code 0, its stored log has every line exactly once and
// in order (what the run printed while no executor was there included), and
// nothing stays on the engine. The second case does the same with a drained
// executor, which is still drained after the restart.
func TestReadopt(t *testing.T) {
	s := newFailoverStack(t)
	t.Run("killed mid-run", func(t *testing.T) { t.Parallel(); testReadopt(t, s, false) })
	t.Run("killed mid-run while drained", func(t *testing.T) { t.Parallel(); testReadopt(t, s, true) })
}

const readoptLines = 60

func testReadopt(t *testing.T, s *foStack, drained bool) {
	// Each case has its own executor id: two executors with one id on one
	// engine would reap each other's containers.
	name, id := "readopt", "exec-ra"
	if drained {
		name, id = "readopt-drained", "exec-rd"
	}
	p := s.pool(t, name)
	gw := p.gateway(t, "gw-1").Start(t)
	workDir := t.TempDir()
	env := executorEnv("docker", 1)
	since := time.Now()
	ex := harness.NewExecutor(t, s.executorBin, id, workDir, gw.GRPCAddr, s.logship.GRPCAddr, env...).Start(t)
	p.waitAttached(t, "gw-1", since, id)
	ctl := func(args ...string) harness.Result {
		t.Helper()
		return harness.Run(t, time.Minute, nil, p.cp.Ctl, args...)
	}
	executorState := func(after time.Time, state eventv1.WorkerState) {
		t.Helper()
		p.obs.WaitHeartbeat(2*wait, id+" "+state.String(), func(hb *eventv1.Heartbeat) bool {
			for _, e := range hb.GetExecutors() {
				if hb.GetTimeUnixMs() >= after.UnixMilli() && e.GetExecutorId() == id && e.GetState() == state {
					return true
				}
			}
			return false
		})
	}

	script := fmt.Sprintf("i=1; while [ $i -le %d ]; do echo line-$i; i=$((i+1)); sleep 0.2; done", readoptLines)
	runID := p.submit(t, harness.Task(runnerImage, script, "echo stderr-after >&2", "exit 0").JSON())
	p.waitKind(t, runID, "phase:perform", 2*wait)
	ctr := waitContainerRunning(t, runID)
	if drained {
		if r := ctl("worker", "drain", "--dir", p.cp.Dir, "--pool", p.name, id); r.Code != 0 {
			t.Fatalf("worker drain: %s", r)
		}
		executorState(time.Now(), eventv1.WorkerState_WORKER_STATE_DRAINED)
	}
	// Part of the output goes through the first executor process.
	time.Sleep(2 * time.Second)
	ex.Kill()
	// The run goes on printing with no executor to read it.
	time.Sleep(2 * time.Second)
	if st := containers(t, runID); len(st) != 1 || st[0] != ctr+" running" {
		t.Fatalf("run %s: containers %q after the executor was killed, want %s running (the test kills the executor, not the run)", runID, st, ctr)
	}

	since = time.Now()
	ex2 := ex.Start(t) // the same executor: same id, work directory and ports
	fin := p.final(t, runID, 3*wait)
	if !isOutcome(fin, eventv1.Outcome_OUTCOME_FINISHED) || fin.GetExitCode() != 0 {
		t.Errorf("run %s: %s exit %d %q, want finished with exit code 0\nexecutor:\n%s", runID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason(), ex2.Output())
	}
	p.checkRun(t, runID, 1)
	log := s.runLog(t, runID, fin, "runs/"+runID+"/log")
	var got []string
	for l := range strings.SplitSeq(log, "\n") {
		if regexp.MustCompile(`^line-[0-9]+$`).MatchString(l) {
			got = append(got, l)
		}
	}
	ok := len(got) == readoptLines
	for i := 0; ok && i < readoptLines; i++ {
		ok = got[i] == fmt.Sprintf("line-%d", i+1)
	}
	if !ok {
		t.Errorf("run %s: the stored log does not hold line-1..line-%d exactly once in order (%d numbered lines):\n%s", runID, readoptLines, len(got), log)
	}
	if !hasLine(log, "stderr-after") || !strings.Contains(log, "re-adopted") {
		t.Errorf("run %s: the log lacks the later output or the re-adoption note:\n%s", runID, log)
	}
	if !strings.Contains(ex2.Output(), "run re-adopted") {
		t.Errorf("the restarted executor does not say it re-adopted run %s:\n%s", runID, ex2.Output())
	}
	waitNothingLeft(t, map[string]bool{runID: true})
	if out := harness.MustDocker(t, "ps", "-a", "--filter", "label=hangar.run-id="+runID, "--format", "{{.Names}}"); out != "" {
		t.Errorf("docker ps -a still lists the run's containers: %s", out)
	}
	if ws := ex2.Workspaces(t); len(ws) > 0 {
		t.Errorf("executor work dir still holds workspaces: %q", ws)
	}

	if drained {
		// Still drained after the restart, and remembered on disk.
		executorState(since, eventv1.WorkerState_WORKER_STATE_DRAINED)
		b, err := os.ReadFile(filepath.Join(workDir, "hangar-executor-"+id+".leases.json"))
		var st struct {
			Drained bool `json:"drained"`
		}
		if err != nil || json.Unmarshal(b, &st) != nil || !st.Drained {
			t.Errorf("executor state file %s does not say drained: %v", b, err)
		}
		next := p.submit(t, harness.Task(runnerImage, "echo after-restart").JSON())
		p.waitKind(t, next, "admitted", wait)
		executorState(time.Now(), eventv1.WorkerState_WORKER_STATE_DRAINED)
		executorState(time.Now(), eventv1.WorkerState_WORKER_STATE_DRAINED)
		for _, k := range kinds(p.obs.RunEvents(next)) {
			if k == "started" {
				t.Fatalf("run %s started on the executor that was drained before its restart", next)
			}
		}
		if r := ctl("worker", "undrain", "--dir", p.cp.Dir, "--pool", p.name, id); r.Code != 0 {
			t.Fatalf("worker undrain: %s", r)
		}
		if fin := p.final(t, next, 2*wait); !isOutcome(fin, eventv1.Outcome_OUTCOME_FINISHED) {
			t.Errorf("run %s after undrain: %s %q", next, fin.GetOutcome(), fin.GetReason())
		}
		waitNothingLeft(t, p.runSet())
	}

	// Stopped, the executor leaves nothing on the engine: neither its
	// runs' containers nor a network holder (ADR 0024), which carries no
	// run id: the one the killed process had started ahead, the one its
	// re-adopted run had joined, the one the restarted process started.
	ex2.Shutdown()
	if out := harness.MustDocker(t, "ps", "-a", "--filter", "label=hangar.executor-id="+id, "--format", `{{.Names}} {{.Label "hangar.network-holder"}}`); out != "" {
		t.Errorf("docker ps -a lists containers of executor %s after it stopped: %s", id, out)
	}
}
