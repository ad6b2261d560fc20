package e2e

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// TestSoak runs a few hundred short runs across three executors (process
// runtime: the point is the protocol, not the engine's container start rate)
// while one executor is SIGKILLed and started again, and the gateway is
// stopped (SIGTERM) and started again with the same data dir, in the middle.
// Whatever happened to it, every run ends with exactly one final event and no
// run is started twice; the counts are logged.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	const (
		total      = 300
		submitters = 4
	)
	s := newFailoverStack(t)
	p := s.pool(t, "soak")
	gw := p.gateway(t, "gw-soak").Start(t)
	env := executorEnv("process", 4)
	ids := []string{"soak-1", "soak-2", "soak-3"}
	dirs := map[string]string{}
	execs := map[string]*harness.Executor{}
	since := time.Now()
	for _, id := range ids {
		dirs[id] = t.TempDir()
		execs[id] = harness.NewExecutor(t, s.executorBin, id, dirs[id], gw.GRPCAddr, s.logship.GRPCAddr, env...).Start(t)
	}
	p.waitAttached(t, "gw-soak", since, ids...)

	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", harness.Task(runnerImage, "echo soak-ok").JSON())
	var (
		mu         sync.Mutex
		runs       []string
		submitErrs []error
	)
	// submit publishes runs [from, to) with a few submitters at once.
	submit := func(from, to int) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range submitters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range next {
					id, err := p.submitQuiet(specFile)
					mu.Lock()
					if err != nil {
						submitErrs = append(submitErrs, err)
					} else {
						runs = append(runs, id)
					}
					mu.Unlock()
				}
			}()
		}
		for i := from; i < to; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	start := time.Now()

	submit(0, 100)
	// An executor killed in the middle of the runs, started again as itself.
	execs["soak-3"].Kill()
	submit(100, 130)
	execs["soak-3"].Start(t)
	submit(130, 200)
	// The gateway stopped in the middle of the runs; runs published while it
	// is away wait in its persistent session.
	gw.Stop()
	submit(200, 240)
	gw.Start(t)
	submit(240, total)
	t.Logf("submitted %d runs in %s", total, time.Since(start).Round(100*time.Millisecond))

	mu.Lock()
	all := append([]string(nil), runs...)
	for _, err := range submitErrs {
		t.Errorf("submit: %v", err)
	}
	mu.Unlock()
	p.obs.WaitFor(3*wait, fmt.Sprintf("final events of all %d runs", len(all)), func() bool {
		for _, id := range all {
			if !hasFinal(p.obs.RunEvents(id)) {
				return false
			}
		}
		return true
	})
	t.Logf("all %d runs ended %s after the first was submitted", len(all), time.Since(start).Round(100*time.Millisecond))

	counts := map[string]int{}
	var problems []string
	duplicates, redelivered := 0, 0
	byExecutor := map[string]int{}
	for _, id := range all {
		r := p.inspectRun(id, 1)
		redelivered += r.redeliver
		for _, e := range r.starts {
			byExecutor[e]++
		}
		if len(r.starts) > 1 {
			duplicates++
		}
		for _, pr := range r.problems {
			problems = append(problems, fmt.Sprintf("run %s: %s; events:\n%s", id, pr, describe(r.events)))
		}
		if r.final == nil {
			continue
		}
		fin := r.final.GetFinished()
		if fin == nil {
			counts["denied"]++
			continue
		}
		counts[strings.TrimPrefix(strings.ToLower(fin.GetOutcome().String()), "outcome_")]++
		switch fin.GetOutcome() {
		case eventv1.Outcome_OUTCOME_FINISHED:
			if fin.GetLogKey() != "runs/"+id+"/log" {
				problems = append(problems, fmt.Sprintf("run %s finished with log key %q", id, fin.GetLogKey()))
			} else if b, _, ok := s.s3.Get(t, fin.GetLogKey()); !ok || !hasLine(string(b), "soak-ok") {
				problems = append(problems, fmt.Sprintf("run %s finished but its log (%v) lacks its output:\n%s", id, ok, b))
			}
		case eventv1.Outcome_OUTCOME_LOST, eventv1.Outcome_OUTCOME_FAILED, eventv1.Outcome_OUTCOME_STOPPED:
			if fin.GetReason() == "" {
				problems = append(problems, fmt.Sprintf("run %s: %s without a reason", id, fin.GetOutcome()))
			}
		}
	}
	t.Logf("soak: submitted %d, finished %d, failed %d, lost %d, stopped %d, timed out %d, denied %d; started twice %d; events published again %d; started by executor %v",
		len(all), counts["finished"], counts["failed"], counts["lost"], counts["stopped"], counts["timed_out"], counts["denied"],
		duplicates, redelivered, byExecutor)
	if len(all) != total {
		t.Errorf("%d runs submitted, want %d", len(all), total)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 30 {
			problems = append(problems[:30], fmt.Sprintf("... and %d more", len(problems)-30))
		}
		t.Errorf("%d problems:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	// The executor killed mid-way loses at most the runs it had; the rest
	// finish. (Not a timing: lost runs are only those of the killed life.)
	if counts["finished"]+counts["lost"] != len(all) {
		t.Errorf("outcomes %v: every run should finish, or be lost with the executor that was killed", counts)
	}
	for _, id := range ids {
		if ws := execs[id].Workspaces(t); len(ws) > 0 {
			t.Errorf("executor %s's work dir still holds workspaces: %q", id, ws)
		}
	}
}

func hasFinal(evs []*eventv1.Event) bool {
	for _, ev := range evs {
		if ev.GetFinished() != nil || ev.GetDenied() != nil {
			return true
		}
	}
	return false
}
