package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// gateway is the gateway's side of one Attach stream, driven by the test (the
// real gateway is another service; the end-to-end tests run both for real).
type gateway struct {
	workv1.UnimplementedWorkServiceServer
	hellos chan *workv1.Hello
	in     chan *workv1.AttachRequest
	out    chan *workv1.AttachResponse
	lease  uint32
}

func (g *gateway) Attach(st workv1.WorkService_AttachServer) error {
	m, err := st.Recv()
	if err != nil {
		return err
	}
	g.hellos <- m.GetHello()
	if err := st.Send(&workv1.AttachResponse{Kind: &workv1.AttachResponse_Welcome{Welcome: &workv1.Welcome{PoolId: "p", LeaseSeconds: g.lease}}}); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			g.in <- m
		}
	}()
	for {
		select {
		case m := <-g.out:
			if m == nil {
				return errors.New("test breaks the stream")
			}
			if err := st.Send(m); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
}

// blockingExec runs until its context ends, reporting the cause.
type blockingExec struct {
	mu     sync.Mutex
	causes []error
	start  chan string
}

func (b *blockingExec) Execute(ctx context.Context, a *workv1.Assign, phase func(string)) *eventv1.RunFinished {
	phase("init")
	b.start <- a.GetRunId()
	<-ctx.Done()
	b.mu.Lock()
	b.causes = append(b.causes, context.Cause(ctx))
	b.mu.Unlock()
	return &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_STOPPED, Reason: context.Cause(ctx).Error()}
}

func setup(t *testing.T, lease uint32) (*gateway, *Worker, *blockingExec) {
	t.Helper()
	g := &gateway{hellos: make(chan *workv1.Hello, 4), in: make(chan *workv1.AttachRequest, 64), out: make(chan *workv1.AttachResponse, 64), lease: lease}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workv1.RegisterWorkServiceServer(srv, g)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ex := &blockingExec{start: make(chan string, 4)}
	w := New(Config{ID: "ex-1", Slots: 2, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), CancelReason: "test"}, workv1.NewWorkServiceClient(conn), ex)
	ctx, cancel := context.WithCancel(context.Background())
	go w.Run(ctx)
	t.Cleanup(cancel)
	select {
	case h := <-g.hellos:
		if h.GetExecutorId() != "ex-1" || h.GetSlots() != 2 {
			t.Fatalf("hello = %v", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Hello")
	}
	return g, w, ex
}

func (g *gateway) waitFor(t *testing.T, match func(*workv1.AttachRequest) bool) *workv1.AttachRequest {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-g.in:
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatal("expected message never came")
		}
	}
}

func assign(id, lease string, deadline time.Time) *workv1.AttachResponse {
	return &workv1.AttachResponse{Kind: &workv1.AttachResponse_Assign{Assign: &workv1.Assign{
		LeaseId: lease, Epoch: 1, RunId: id, DeadlineUnixMs: deadline.UnixMilli(),
	}}}
}

func TestCancelStopsRunAndFinishIsReported(t *testing.T) {
	g, _, ex := setup(t, 30)
	g.out <- assign("r1", "l1", time.Now().Add(time.Minute))
	<-ex.start
	g.waitFor(t, func(m *workv1.AttachRequest) bool { return m.GetProgress().GetPhase() == "init" })
	g.out <- &workv1.AttachResponse{Kind: &workv1.AttachResponse_Cancel{Cancel: &workv1.Cancel{RunId: "r1", Reason: "by user"}}}
	fin := g.waitFor(t, func(m *workv1.AttachRequest) bool { return m.GetFinish() != nil }).GetFinish()
	if fin.GetLeaseId() != "l1" || fin.GetResult().GetOutcome() != eventv1.Outcome_OUTCOME_STOPPED {
		t.Fatalf("finish = %v", fin)
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if !errors.Is(ex.causes[0], runner.ErrCancelled) {
		t.Fatalf("cause = %v, want ErrCancelled", ex.causes[0])
	}
}

func TestRevokedRunStopsAndIsNotReported(t *testing.T) {
	g, w, ex := setup(t, 30)
	g.out <- assign("r1", "l1", time.Now().Add(time.Minute))
	<-ex.start
	g.out <- &workv1.AttachResponse{Kind: &workv1.AttachResponse_Revoked{Revoked: &workv1.LeaseRevoked{LeaseId: "l1", Epoch: 1, Reason: "lease expired"}}}
	select {
	case <-w.Idle():
	case <-time.After(5 * time.Second):
		t.Fatal("revoked run did not stop")
	}
	ex.mu.Lock()
	cause := ex.causes[0]
	ex.mu.Unlock()
	if !errors.Is(cause, runner.ErrLeaseLost) {
		t.Fatalf("cause = %v, want ErrLeaseLost", cause)
	}
	time.Sleep(200 * time.Millisecond)
	for len(g.in) > 0 {
		if m := <-g.in; m.GetFinish() != nil {
			t.Fatal("a revoked run must not be reported again")
		}
	}
}

func TestRunStopsItselfWhenLeaseCannotBeRenewed(t *testing.T) {
	g, w, ex := setup(t, 30)
	// A deadline in the past and no renewal answered: the executor fences itself.
	g.out <- assign("r1", "l1", time.Now().Add(300*time.Millisecond))
	<-ex.start
	select {
	case <-w.Idle():
	case <-time.After(5 * time.Second):
		t.Fatal("run went on past its lease deadline")
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if !errors.Is(ex.causes[0], runner.ErrLeaseLost) {
		t.Fatalf("cause = %v, want ErrLeaseLost", ex.causes[0])
	}
}

func TestReattachListsHeldLeasesAndResendsFinish(t *testing.T) {
	g, w, ex := setup(t, 3)
	g.out <- assign("r1", "l1", time.Now().Add(time.Minute))
	<-ex.start
	g.out <- nil // break the stream
	var h *workv1.Hello
	select {
	case h = <-g.hellos:
	case <-time.After(10 * time.Second):
		t.Fatal("no reattach")
	}
	if len(h.GetHeld()) != 1 || h.GetHeld()[0].GetLeaseId() != "l1" || h.GetHeld()[0].GetRunId() != "r1" {
		t.Fatalf("held = %v", h.GetHeld())
	}
	// Renewals go on over the new stream.
	g.waitFor(t, func(m *workv1.AttachRequest) bool { return m.GetRenew().GetLeaseId() == "l1" })
	w.CancelAll()
	g.waitFor(t, func(m *workv1.AttachRequest) bool { return m.GetFinish().GetLeaseId() == "l1" })
	// Not acknowledged: after another break the finish is listed and resent.
	g.out <- nil
	<-g.hellos
	g.waitFor(t, func(m *workv1.AttachRequest) bool { return m.GetFinish().GetLeaseId() == "l1" })
	g.out <- &workv1.AttachResponse{Kind: &workv1.AttachResponse_Revoked{Revoked: &workv1.LeaseRevoked{LeaseId: "l1", Epoch: 1, Reason: "finished"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Reported(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUnavailableHostSaysWhyInItsStatus(t *testing.T) {
	g := &gateway{hellos: make(chan *workv1.Hello, 4), in: make(chan *workv1.AttachRequest, 64), out: make(chan *workv1.AttachResponse, 64), lease: 30}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workv1.RegisterWorkServiceServer(srv, g)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	t.Cleanup(func() { conn.Close() })
	var mu sync.Mutex
	reason := "low disk: 1 KiB free"
	ex := &blockingExec{start: make(chan string, 4)}
	w := New(Config{ID: "ex-1", Slots: 2, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
		Unavailable:       func() string { mu.Lock(); defer mu.Unlock(); return reason },
		AdmissionInterval: 50 * time.Millisecond,
	}, workv1.NewWorkServiceClient(conn), ex)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go w.Run(ctx)
	<-g.hellos
	g.waitFor(t, func(m *workv1.AttachRequest) bool {
		return m.GetStatus().GetUnavailableReason() == "low disk: 1 KiB free"
	})
	// An assignment racing with the status is not run.
	g.out <- assign("r1", "l1", time.Now().Add(time.Minute))
	select {
	case <-ex.start:
		t.Fatal("an unavailable executor started a run")
	case <-time.After(300 * time.Millisecond):
	}
	mu.Lock()
	reason = ""
	mu.Unlock()
	g.waitFor(t, func(m *workv1.AttachRequest) bool {
		return m.GetStatus() != nil && m.GetStatus().GetUnavailableReason() == "" && m.GetStatus().GetFreeSlots() == 2
	})
}

func TestRunsOfAnEarlierLifeAreReportedLost(t *testing.T) {
	state := filepath.Join(t.TempDir(), "leases.json")
	if err := os.WriteFile(state, []byte(`{"l9":{"run_id":"r9","epoch":4}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{hellos: make(chan *workv1.Hello, 4), in: make(chan *workv1.AttachRequest, 64), out: make(chan *workv1.AttachResponse, 64), lease: 30}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := grpc.NewServer()
	workv1.RegisterWorkServiceServer(srv, g)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	t.Cleanup(func() { conn.Close() })
	var orphaned []string
	bx := &blockingExec{start: make(chan string, 1)}
	w := New(Config{ID: "ex-1", Slots: 1, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), StateFile: state,
		Orphaned: func(_ context.Context, runID string, _ *logsv1.RunCredential) string {
			orphaned = append(orphaned, runID)
			return "runs/" + runID + "/log"
		},
	}, workv1.NewWorkServiceClient(conn), bx)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go w.Run(ctx)
	h := <-g.hellos
	if len(h.GetHeld()) != 1 || h.GetHeld()[0].GetRunId() != "r9" || h.GetHeld()[0].GetEpoch() != 4 {
		t.Fatalf("held = %v", h.GetHeld())
	}
	fin := g.waitFor(t, func(m *workv1.AttachRequest) bool { return m.GetFinish() != nil }).GetFinish()
	if fin.GetLeaseId() != "l9" || fin.GetResult().GetOutcome() != eventv1.Outcome_OUTCOME_LOST || fin.GetResult().GetLogKey() != "runs/r9/log" {
		t.Fatalf("finish = %v", fin)
	}
	if len(orphaned) != 1 {
		t.Fatalf("orphaned = %v", orphaned)
	}
	// A new run is recorded in the state file while it runs.
	g.out <- &workv1.AttachResponse{Kind: &workv1.AttachResponse_Revoked{Revoked: &workv1.LeaseRevoked{LeaseId: "l9", Reason: "finished"}}}
	g.out <- assign("r10", "l10", time.Now().Add(time.Minute))
	<-bx.start // saved before the run starts
	b, _ := os.ReadFile(state)
	if !strings.Contains(string(b), `"r10"`) || strings.Contains(string(b), `"r9"`) {
		t.Fatalf("state = %s", b)
	}
}

// TestRestartReadoptsAndStaysDrained: a state file of an earlier life with
// the drain on, a run whose lease is current and one whose lease expired.
// The new worker says drained in its Hello, re-adopts the current run (listed
// as held, carried on by Readopt's continuation and reported), reports the
// expired one lost without asking Readopt, and keeps the drain on disk.
func TestRestartReadoptsAndStaysDrained(t *testing.T) {
	state := filepath.Join(t.TempDir(), "leases.json")
	future, past := time.Now().Add(time.Minute).UnixMilli(), time.Now().Add(-time.Minute).UnixMilli()
	if err := os.WriteFile(state, []byte(fmt.Sprintf(`{"drained":true,"leases":{"l1":{"run_id":"r1","epoch":2,"deadline_unix_ms":%d},"l2":{"run_id":"r2","epoch":3,"deadline_unix_ms":%d}}}`, future, past)), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{hellos: make(chan *workv1.Hello, 4), in: make(chan *workv1.AttachRequest, 64), out: make(chan *workv1.AttachResponse, 64), lease: 30}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := grpc.NewServer()
	workv1.RegisterWorkServiceServer(srv, g)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	t.Cleanup(func() { conn.Close() })
	var asked, orphaned []string
	release := make(chan struct{})
	w := New(Config{ID: "ex-1", Slots: 1, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), StateFile: state,
		Orphaned: func(_ context.Context, runID string, _ *logsv1.RunCredential) string {
			orphaned = append(orphaned, runID)
			return ""
		},
		Readopt: func(_ context.Context, runID string, _ *logsv1.RunCredential) (func(context.Context, func(string)) *workv1.Finish, error) {
			asked = append(asked, runID)
			return func(context.Context, func(string)) *workv1.Finish {
				<-release
				return &workv1.Finish{Result: &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FINISHED}}
			}, nil
		},
	}, workv1.NewWorkServiceClient(conn), &blockingExec{start: make(chan string, 1)})
	if got := w.Adopted(); !slices.Equal(got, []string{"r1"}) {
		t.Errorf("adopted = %v, want [r1]", got)
	}
	if !slices.Equal(asked, []string{"r1"}) || !slices.Equal(orphaned, []string{"r2"}) {
		t.Errorf("Readopt asked for %v, Orphaned for %v; want [r1] and [r2]", asked, orphaned)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go w.Run(ctx)
	h := <-g.hellos
	if !h.GetDrained() {
		t.Error("the Hello after a restart does not say drained")
	}
	held := map[string]uint64{}
	for _, l := range h.GetHeld() {
		held[l.GetLeaseId()] = l.GetEpoch()
	}
	if held["l1"] != 2 || held["l2"] != 3 {
		t.Errorf("held = %v, want l1 (running) and l2 (its lost result unacknowledged)", h.GetHeld())
	}
	close(release)
	fin := g.waitFor(t, func(m *workv1.AttachRequest) bool {
		return m.GetFinish() != nil && m.GetFinish().GetLeaseId() == "l1"
	}).GetFinish()
	if fin.GetEpoch() != 2 || fin.GetResult().GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Errorf("finish of the re-adopted run = %v", fin)
	}
	b, _ := os.ReadFile(state)
	if !strings.Contains(string(b), `"drained":true`) {
		t.Errorf("state file lost the drain: %s", b)
	}
}
