package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// Sizes of BenchmarkCost (issue 12, "cost as work grows").
const (
	costInFlight = 50   // runs in flight on one executor with as many slots
	costQueued   = 1000 // runs queued at a gateway with no executor attached
	costMarker   = "cost-first-output"
)

// costSleep is how long each of the in-flight runs sleeps after its first
// line: long enough that all of them are in flight together while the engine
// starts the others' containers ($HANGAR_BENCH_COST_SLEEP seconds, default 20).
func costSleep(b *testing.B) int {
	if v := os.Getenv("HANGAR_BENCH_COST_SLEEP"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 600 {
			b.Fatalf("HANGAR_BENCH_COST_SLEEP=%q is not a number of seconds in 0..600", v)
		}
		return n
	}
	return 20
}

// BenchmarkCost measures what work costs as it grows, over the real binaries
// (hangarctl broker, policy, gateway, executor with the Docker runtime,
// logship; each its own process, so that each one's memory can be read):
//
//   - 50 short runs (`echo; sleep`) in flight on one executor with 50 slots:
//     every run must end with exactly one final event, `finished` with exit 0
//     (the benchmark fails otherwise), and no container of theirs may be left.
//     Reported: time from publishing a run to its first line through
//     logship's Tail, p50 and p99; the most runs seen in flight at once (from
//     the events); the executor's and logship's RSS per concurrent run:
//     (peak VmRSS during the runs - VmRSS when idle after a warm-up run) / 50,
//     sampled from /proc/PID/status every 50 ms. Goal ≤ 2 MiB each.
//   - 1,000 runs queued at a gateway of another pool with no executor
//     attached: all admitted (their `admitted` events), none started.
//     Reported: the gateway's (VmRSS with the 1,000 queued - VmRSS idle) /
//     1000. Goal ≤ 20 KiB.
//
// One iteration does both; run it with -benchtime 1x. Timings and sizes are
// reported, never judged.
func BenchmarkCost(b *testing.B) {
	requireImage(b)
	root, err := harness.FindRoot()
	if err != nil {
		b.Fatal(err)
	}
	bins := harness.NewBinaries(root, filepath.Join(tmpRoot, "cost-bin"))
	if err := bins.Build("hangarctl", "gateway", "policy", "executor", "logship"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		costOnce(b, bins)
	}
}

func costOnce(b *testing.B, bins *harness.Binaries) {
	b.StopTimer()
	defer b.StartTimer()
	cp := harness.NewControlPlane(b, bins.Path(b, "hangarctl"))
	s3 := harness.StartS3(b, "hangar-logs")
	pol := harness.StartPolicy(b, bins.Path(b, "policy"), "")
	ls := harness.StartLogship(b, bins.Path(b, "logship"), s3)
	b.StartTimer()

	costConcurrent(b, bins, cp, pol.GRPCAddr, ls)
	costQueue(b, bins, cp, pol.GRPCAddr, ls.GRPCAddr)
}

// costPool is a pool of its own (broker, gateway) driven as the control plane.
type costPool struct {
	*devStack
	gw *harness.Gateway

	evMu   sync.Mutex
	finals map[string]map[string]*eventv1.Event // run id -> event id -> final event
	kinds  map[string]int                       // "admitted", "started", "finished" -> count of distinct events
	seen   map[string]bool                      // event ids
	active int                                  // started minus finished, in arrival order
	peak   int
}

func newCostPool(b *testing.B, bins *harness.Binaries, cp *harness.ControlPlane, policyAddr, logshipAddr string) *costPool {
	b.Helper()
	var id [4]byte
	_, _ = rand.Read(id[:])
	name := "cost-" + hex.EncodeToString(id[:])
	br := cp.StartEmbeddedBrokerData(b)
	key, csr := cp.Keygen(b, b.TempDir())
	token := cp.CreatePool(b, name, csr, br.URL)
	p := &costPool{finals: map[string]map[string]*eventv1.Event{}, kinds: map[string]int{}, seen: map[string]bool{}}
	p.gw = harness.StartGateway(b, bins.Path(b, "gateway"), token, harness.KeyEnv(b, key), policyAddr, "HANGAR_WORKER_ID=gw-"+name)
	p.devStack = &devStack{cpDir: cp.Dir, poolName: name, broker: br.URL, logship: logshipAddr,
		out: &syncBuffer{}, done: make(chan struct{}), waiters: map[string]chan *eventv1.Event{}, record: p.onEvent}
	if err := p.connect(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		p.mq.Disconnect(100)
		p.logConn.Close()
	})
	return p
}

func (p *costPool) onEvent(ev *eventv1.Event) {
	p.evMu.Lock()
	defer p.evMu.Unlock()
	if p.seen[ev.GetEventId()] { // a redelivery (QoS 1)
		return
	}
	p.seen[ev.GetEventId()] = true
	switch {
	case ev.GetAdmitted() != nil:
		p.kinds["admitted"]++
	case ev.GetStarted() != nil:
		p.kinds["started"]++
		p.active++
		p.peak = max(p.peak, p.active)
	case ev.GetFinished() != nil, ev.GetDenied() != nil, ev.GetRejected() != nil:
		if ev.GetFinished() != nil {
			p.kinds["finished"]++
			p.active--
		}
		m := p.finals[ev.GetRunId()]
		if m == nil {
			m = map[string]*eventv1.Event{}
			p.finals[ev.GetRunId()] = m
		}
		m[ev.GetEventId()] = ev
	}
}

func (p *costPool) count(kind string) int {
	p.evMu.Lock()
	defer p.evMu.Unlock()
	return p.kinds[kind]
}

// waitCount waits until n distinct events of kind arrived.
func (p *costPool) waitCount(b *testing.B, kind string, n int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for p.count(kind) < n {
		if time.Now().After(deadline) {
			b.Fatalf("pool %s: %d %s events after %s, want %d", p.poolName, p.count(kind), kind, timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// costConcurrent is the 50-runs-in-flight half of BenchmarkCost.
func costConcurrent(b *testing.B, bins *harness.Binaries, cp *harness.ControlPlane, policyAddr string, ls *harness.Logship) {
	p := newCostPool(b, bins, cp, policyAddr, ls.GRPCAddr)
	var id [4]byte
	_, _ = rand.Read(id[:])
	runIDs := map[string]bool{}
	b.Cleanup(func() { harness.RemoveManaged(b, runIDs) }) // last resort after a failure
	ex := harness.StartExecutor(b, bins.Path(b, "executor"), "cost-exec-"+hex.EncodeToString(id[:]), p.gw.GRPCAddr, ls.GRPCAddr,
		"HANGAR_EXECUTOR_SLOTS="+strconv.Itoa(costInFlight), "HANGAR_EXECUTOR_RUNTIME=docker", "HANGAR_CANCEL_GRACE=2s",
		// Admission thresholds off: a busy host must not make the executor
		// refuse part of the work being measured.
		"HANGAR_MIN_FREE_DISK_MB=0", "HANGAR_MIN_FREE_MEMORY_MB=0")

	// A warm-up run: the executor is attached and has run once (its image
	// checks, relay, logship stream) before the idle memory is read.
	warm := p.prepare(b, benchImage, "echo warm-up")
	runIDs[warm.id] = true
	if err := p.publish(warm); err != nil {
		b.Fatal(err)
	}
	if _, err := warm.finished(5 * time.Minute); err != nil {
		b.Fatal(err)
	}
	p.forget(warm)
	p.waitCount(b, "finished", 1, time.Minute)
	time.Sleep(2 * time.Second)
	exIdle, lsIdle := vmRSS(b, ex.Pid()), vmRSS(b, ls.Pid())

	stop := make(chan struct{})
	var exPeak, lsPeak int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := readStatusKB(ex.Pid(), "VmRSS"); err == nil {
				exPeak = max(exPeak, v)
			}
			if v, err := readStatusKB(ls.Pid(), "VmRSS"); err == nil {
				lsPeak = max(lsPeak, v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	sleep := costSleep(b)
	runs := make([]*run, costInFlight)
	for i := range runs {
		runs[i] = p.prepare(b, benchImage, fmt.Sprintf("echo %s; sleep %d", costMarker, sleep))
		runIDs[runs[i].id] = true
	}
	firsts := make([]time.Duration, len(runs))
	errs := make([]error, len(runs))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i, r := range runs {
		t0 := time.Now()
		if err := p.publish(r); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			firsts[i], errs[i] = firstOutput(ctx, p.logs, r.id, t0)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	p.waitCount(b, "finished", 1+len(runs), 10*time.Minute)
	close(stop)
	<-sampled
	// Redeliveries or a second final event would come now: give them a moment.
	time.Sleep(2 * time.Second)

	p.evMu.Lock()
	for _, r := range runs {
		finals := p.finals[r.id]
		if len(finals) != 1 {
			var what []string
			for _, ev := range finals {
				what = append(what, describe(ev))
			}
			p.evMu.Unlock()
			b.Fatalf("run %s: %d final events, want exactly 1: %s", r.id, len(finals), strings.Join(what, "; "))
		}
		for _, ev := range finals {
			if fin := ev.GetFinished(); fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
				p.evMu.Unlock()
				b.Fatalf("run %s: %s, want finished with exit code 0", r.id, describe(ev))
			}
		}
	}
	peakInFlight := p.peak
	p.evMu.Unlock()
	for _, r := range runs {
		p.forget(r)
	}
	if left := harness.ManagedLeftovers(b, runIDs); len(left) > 0 {
		b.Fatalf("left on the engine after every run finished: %v", left)
	}
	exHWM, lsHWM := statusKB(b, ex.Pid(), "VmHWM"), statusKB(b, ls.Pid(), "VmHWM")

	ms := make([]float64, len(firsts))
	for i, d := range firsts {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(ms)
	b.ReportMetric(percentile(ms, 50), "first-ms-p50")
	b.ReportMetric(percentile(ms, 99), "first-ms-p99")
	b.ReportMetric(float64(peakInFlight), "max-in-flight")
	b.ReportMetric(float64(exPeak-exIdle)/costInFlight/1024, "executor-MiB/run")
	b.ReportMetric(float64(lsPeak-lsIdle)/costInFlight/1024, "logship-MiB/run")
	b.ReportMetric(float64(exIdle)/1024, "executor-idle-MiB")
	b.ReportMetric(float64(exPeak)/1024, "executor-peak-MiB")
	b.ReportMetric(float64(exHWM)/1024, "executor-hwm-MiB")
	b.ReportMetric(float64(lsIdle)/1024, "logship-idle-MiB")
	b.ReportMetric(float64(lsPeak)/1024, "logship-peak-MiB")
	b.ReportMetric(float64(lsHWM)/1024, "logship-hwm-MiB")
}

// costQueue is the 1,000-runs-queued half of BenchmarkCost: a pool whose
// gateway has no executor.
func costQueue(b *testing.B, bins *harness.Binaries, cp *harness.ControlPlane, policyAddr, logshipAddr string) {
	p := newCostPool(b, bins, cp, policyAddr, logshipAddr)
	time.Sleep(2 * time.Second)
	idle := vmRSS(b, p.gw.Pid())
	runs := make([]*run, costQueued)
	for i := range runs {
		runs[i] = p.prepare(b, benchImage, "echo never")
		p.forget(runs[i]) // counted by onEvent; the per-run channels are not read
	}
	for _, r := range runs {
		if err := p.publish(r); err != nil {
			b.Fatal(err)
		}
	}
	p.waitCount(b, "admitted", costQueued, 10*time.Minute)
	time.Sleep(2 * time.Second)
	queued := vmRSS(b, p.gw.Pid())
	if n := p.count("started"); n != 0 {
		b.Fatalf("%d runs started on a pool with no executor", n)
	}
	p.evMu.Lock()
	finals := len(p.finals)
	p.evMu.Unlock()
	if finals != 0 {
		b.Fatalf("%d of the queued runs ended (denied, rejected or finished), want none", finals)
	}
	b.ReportMetric(float64(queued-idle)/costQueued, "gateway-KiB/queued-run")
	b.ReportMetric(float64(idle)/1024, "gateway-idle-MiB")
	b.ReportMetric(float64(queued)/1024, "gateway-queued-MiB")
}

// firstOutput tails the run's log through logship until costMarker is in it
// and returns the time since t0. Logship answers NOT_FOUND until the
// executor opened the run's log: that is retried.
func firstOutput(ctx context.Context, logs logsv1.LogServiceClient, runID string, t0 time.Time) (time.Duration, error) {
	var got []byte
	for {
		st, err := logs.Tail(ctx, &logsv1.TailRequest{RunId: runID, Offset: uint64(len(got))}, grpc.WaitForReady(true))
		for err == nil {
			var m *logsv1.TailResponse
			if m, err = st.Recv(); err != nil {
				break
			}
			got = append(got, m.GetData()...)
			if strings.Contains(string(got), costMarker) {
				return time.Since(t0), nil
			}
			if m.GetEnd() {
				return 0, fmt.Errorf("run %s: log ended without %q: %q", runID, costMarker, got)
			}
		}
		if c := status.Code(err); c != codes.NotFound && c != codes.Unavailable && ctx.Err() == nil {
			return 0, fmt.Errorf("run %s: tail: %w", runID, err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("run %s: no %q in its log: %w", runID, costMarker, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func percentile(sorted []float64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func vmRSS(b *testing.B, pid int) int64 { return statusKB(b, pid, "VmRSS") }

func statusKB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	v, err := readStatusKB(pid, field)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// readStatusKB reads a "Field: N kB" line of /proc/PID/status.
func readStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if ok && name == field {
			fs := strings.Fields(rest)
			if len(fs) == 2 && fs[1] == "kB" {
				return strconv.ParseInt(fs[0], 10, 64)
			}
			return 0, fmt.Errorf("/proc/%d/status: %s: %q", pid, field, rest)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}
