package dispatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/services/gateway/internal/intake"
	"github.com/hangar-dev/hangar/services/gateway/internal/runstore"
)

// recorder keeps the events the dispatcher emits (the MQTT outbox in production).
type recorder struct {
	mu       sync.Mutex
	ev       []*eventv1.Event
	reserved uint64
}

func (r *recorder) Run(runID string, _ map[string]string, ev *eventv1.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev.RunId = runID
	r.ev = append(r.ev, ev)
}

func (r *recorder) Reserve(string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reserved++
	return r.reserved
}

func (r *recorder) RunAt(runID string, seq uint64, trace map[string]string, ev *eventv1.Event) {
	ev.Sequence = seq
	r.Run(runID, trace, ev)
}

func (r *recorder) finals(runID string) []*eventv1.RunFinished {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*eventv1.RunFinished
	for _, e := range r.ev {
		if f := e.GetFinished(); f != nil && e.RunId == runID {
			out = append(out, f)
		}
	}
	return out
}

func startDispatcher(t *testing.T, lease time.Duration) (*Dispatcher, *recorder, workv1.WorkServiceClient) {
	t.Helper()
	rec := &recorder{}
	d := New(Config{PoolID: "pool-a", LeaseDuration: lease, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}, rec)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workv1.RegisterWorkServiceServer(srv, d)
	go srv.Serve(lis)
	ctx, cancel := context.WithCancel(context.Background())
	go d.Serve(ctx)
	t.Cleanup(func() { cancel(); srv.Stop() })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return d, rec, workv1.NewWorkServiceClient(conn)
}

type fakeExecutor struct {
	t      *testing.T
	stream workv1.WorkService_AttachClient
	cancel context.CancelFunc
	in     chan *workv1.AttachResponse
}

func attach(t *testing.T, c workv1.WorkServiceClient, hello *workv1.Hello) *fakeExecutor {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	fe := &fakeExecutor{t: t, stream: s, cancel: cancel, in: make(chan *workv1.AttachResponse, 64)}
	go func() {
		defer close(fe.in)
		for {
			m, err := s.Recv()
			if err != nil {
				return
			}
			fe.in <- m
		}
	}()
	if w := fe.next(); w.GetWelcome() == nil {
		t.Fatalf("first message is %v, want Welcome", w)
	}
	t.Cleanup(cancel)
	return fe
}

func (f *fakeExecutor) next() *workv1.AttachResponse {
	f.t.Helper()
	select {
	case m, ok := <-f.in:
		if !ok {
			f.t.Fatal("stream closed")
		}
		return m
	case <-time.After(5 * time.Second):
		f.t.Fatal("no message from the gateway within 5s")
	}
	return nil
}

func (f *fakeExecutor) send(m *workv1.AttachRequest) {
	f.t.Helper()
	if err := f.stream.Send(m); err != nil {
		f.t.Fatal(err)
	}
}

func run(id string) *intake.Run {
	return &intake.Run{ID: id, Spec: &runv1.RunSpec{RunnerImage: "busybox"}, AdmittedAt: time.Now()}
}

func TestRunsSpreadOverExecutorsAndRespectSlots(t *testing.T) {
	d, _, c := startDispatcher(t, 10*time.Second)
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	b := attach(t, c, &workv1.Hello{ExecutorId: "b", Slots: 1})
	for _, id := range []string{"r1", "r2", "r3"} {
		if err := d.Admit(context.Background(), run(id)); err != nil {
			t.Fatal(err)
		}
	}
	ga, gb := a.next().GetAssign(), b.next().GetAssign()
	if ga == nil || gb == nil {
		t.Fatal("each executor should get one run")
	}
	if q, l := d.Counts(); q != 1 || l != 2 {
		t.Fatalf("queued=%d leased=%d; want 1 and 2 (one slot each)", q, l)
	}
	// a finishes: the third run goes to a.
	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: ga.LeaseId, Epoch: ga.Epoch, Result: &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FINISHED},
	}}})
	if m := a.next(); m.GetRevoked().GetReason() != "finished" {
		t.Fatalf("want LeaseRevoked(finished), got %v", m)
	}
	if m := a.next(); m.GetAssign().GetRunId() != "r3" {
		t.Fatalf("want r3 assigned to a, got %v", m)
	}
	if n := testutil.ToFloat64(d.started); n != 3 {
		t.Fatalf("hangar_runs_started_total = %v, want 3", n)
	}
	if n := testutil.ToFloat64(d.finishedBy.WithLabelValues("finished")); n != 1 {
		t.Fatalf("hangar_runs_finished_total{outcome=finished} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(d.workers.WithLabelValues("busy")); n != 2 {
		t.Fatalf("hangar_workers{state=busy} = %v, want 2", n)
	}
}

func TestStaleEpochIsRefusedAndExpiredLeaseIsLost(t *testing.T) {
	d, rec, c := startDispatcher(t, 1500*time.Millisecond)
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 2})
	d.Admit(context.Background(), run("r1"))
	as := a.next().GetAssign()

	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Renew{Renew: &workv1.Renew{LeaseId: as.LeaseId, Epoch: as.Epoch + 7}}})
	if m := a.next(); m.GetRevoked() == nil {
		t.Fatalf("a renewal with a wrong epoch must be revoked, got %v", m)
	}
	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Renew{Renew: &workv1.Renew{LeaseId: as.LeaseId, Epoch: as.Epoch}}})
	if m := a.next(); m.GetRenewed() == nil {
		t.Fatalf("a current renewal must be accepted, got %v", m)
	}
	// Stop renewing: the lease expires, the run is lost exactly once, and a late
	// finish is refused.
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.finals("r1")) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	f := rec.finals("r1")
	if len(f) != 1 || f[0].Outcome != eventv1.Outcome_OUTCOME_LOST {
		t.Fatalf("finals = %v; want one LOST", f)
	}
	if m := a.next(); m.GetRevoked().GetReason() != "lease expired" {
		t.Fatalf("want LeaseRevoked(lease expired), got %v", m)
	}
	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: as.LeaseId, Epoch: as.Epoch, Result: &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FINISHED},
	}}})
	if m := a.next(); m.GetRevoked() == nil {
		t.Fatalf("a finish of an expired lease must be refused, got %v", m)
	}
	if n := len(rec.finals("r1")); n != 1 {
		t.Fatalf("%d final events; want exactly 1", n)
	}
}

func TestReattachKeepsCurrentLeases(t *testing.T) {
	d, rec, c := startDispatcher(t, 10*time.Second)
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	d.Admit(context.Background(), run("r1"))
	as := a.next().GetAssign()
	a.cancel() // the stream breaks
	time.Sleep(100 * time.Millisecond)

	a2 := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1, Held: []*workv1.HeldLease{
		{RunId: "r1", LeaseId: as.LeaseId, Epoch: as.Epoch},
		{RunId: "ghost", LeaseId: "nope", Epoch: 1},
	}})
	if m := a2.next(); m.GetRevoked().GetLeaseId() != "nope" {
		t.Fatalf("an unknown held lease must be revoked, got %v", m)
	}
	a2.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: as.LeaseId, Epoch: as.Epoch, Result: &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FINISHED},
	}}})
	if m := a2.next(); m.GetRevoked().GetReason() != "finished" {
		t.Fatalf("want finished, got %v", m)
	}
	if f := rec.finals("r1"); len(f) != 1 || f[0].Outcome != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("finals = %v", f)
	}
}

func TestCancelQueuedAndLeased(t *testing.T) {
	d, rec, c := startDispatcher(t, 10*time.Second)
	d.Admit(context.Background(), run("queued"))
	if !d.Cancel("queued", "by test") {
		t.Fatal("queued run unknown")
	}
	if f := rec.finals("queued"); len(f) != 1 || f[0].Outcome != eventv1.Outcome_OUTCOME_STOPPED {
		t.Fatalf("finals = %v", f)
	}
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	d.Admit(context.Background(), run("leased"))
	a.next()
	d.Cancel("leased", "by test")
	if m := a.next(); m.GetCancel().GetRunId() != "leased" {
		t.Fatalf("want Cancel, got %v", m)
	}
	if d.Cancel("nothing", "") {
		t.Fatal("an unknown run must not be reported as cancelled")
	}
}

func TestDrainedExecutorTakesNothing(t *testing.T) {
	d, _, c := startDispatcher(t, 10*time.Second)
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 4, Drained: true})
	d.Admit(context.Background(), run("r1"))
	time.Sleep(100 * time.Millisecond)
	if q, _ := d.Counts(); q != 1 {
		t.Fatal("a drained executor got work")
	}
	d.SetDrained("a", false, false)
	if m := a.next(); m.GetDrain() == nil {
		t.Fatalf("want Drain, got %v", m)
	}
	if m := a.next(); m.GetAssign().GetRunId() != "r1" {
		t.Fatalf("want the run once undrained, got %v", m)
	}
}

func TestAttachErrors(t *testing.T) {
	_, _, c := startDispatcher(t, 10*time.Second)
	for _, tc := range []struct {
		name string
		msg  *workv1.AttachRequest
		code codes.Code
	}{
		{"not hello", &workv1.AttachRequest{Kind: &workv1.AttachRequest_Status{Status: &workv1.Status{}}}, codes.FailedPrecondition},
		{"no id", &workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: &workv1.Hello{Slots: 1}}}, codes.InvalidArgument},
		{"no slots", &workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: &workv1.Hello{ExecutorId: "x"}}}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.Attach(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			s.Send(tc.msg)
			_, err = s.Recv()
			if status.Code(err) != tc.code || err == io.EOF {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
		})
	}
	attach(t, c, &workv1.Hello{ExecutorId: "dup", Slots: 1})
	s, _ := c.Attach(context.Background())
	s.Send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: &workv1.Hello{ExecutorId: "dup", Slots: 1}}})
	if _, err := s.Recv(); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate id: got %v", err)
	}
}

func TestLeasedRunSurvivesAGatewayRestart(t *testing.T) {
	store, err := runstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*Dispatcher, *recorder, workv1.WorkServiceClient) {
		rec := &recorder{}
		d := New(Config{PoolID: "pool-a", LeaseDuration: 10 * time.Second, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), Store: store}, rec)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		workv1.RegisterWorkServiceServer(srv, d)
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		t.Cleanup(func() { conn.Close() })
		return d, rec, workv1.NewWorkServiceClient(conn)
	}

	d, _, c := start()
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	d.Admit(context.Background(), run("queued-1")) // goes to a
	as := a.next().GetAssign()
	r := run("r1")
	r.Envelope = []byte("sealed")
	d.Admit(context.Background(), r) // waits: no free slot
	recs, _ := store.Load()
	if len(recs) != 2 || recs[0].LeaseID != as.LeaseId || recs[1].LeaseID != "" || string(recs[1].Envelope) != "sealed" {
		t.Fatalf("records = %+v", recs)
	}

	// The gateway dies; a new one recovers both runs from the store.
	d2, rec2, c2 := start()
	if recs[0].StartedSeq == 0 {
		t.Fatalf("the lease was recorded without the number of its started event: %+v", recs[0])
	}
	d2.Recover(opensAll)
	if !d2.Known("queued-1") || !d2.Known("r1") {
		t.Fatal("recovered runs unknown")
	}
	// The recovered lease announces its started event again, with the number
	// recorded with the lease (the same event id): a gateway stopped between
	// recording the lease and emitting the event does not lose it.
	rec2.mu.Lock()
	var again []*eventv1.Event
	for _, ev := range rec2.ev {
		if ev.GetStarted() != nil && ev.RunId == "queued-1" {
			again = append(again, ev)
		}
	}
	rec2.mu.Unlock()
	if len(again) != 1 || again[0].GetSequence() != recs[0].StartedSeq || again[0].GetStarted().GetExecutorId() != "a" {
		t.Fatalf("started events of the recovered lease: %v, want one with sequence %d on a", again, recs[0].StartedSeq)
	}
	a2 := attach(t, c2, &workv1.Hello{ExecutorId: "a", Slots: 1, Held: []*workv1.HeldLease{{RunId: "queued-1", LeaseId: as.LeaseId, Epoch: as.Epoch}}})
	a2.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{
		LeaseId: as.LeaseId, Epoch: as.Epoch, Result: &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FINISHED},
	}}})
	if m := a2.next(); m.GetRevoked().GetReason() != "finished" {
		t.Fatalf("the recovered lease was not kept: %v", m)
	}
	if m := a2.next(); m.GetAssign().GetRunId() != "r1" {
		t.Fatalf("the recovered queued run was not assigned: %v", m)
	}
	if f := rec2.finals("queued-1"); len(f) != 1 {
		t.Fatalf("finals = %v", f)
	}
	recs, _ = store.Load()
	if len(recs) != 1 || recs[0].RunID != "r1" || recs[0].LeaseID == "" {
		t.Fatalf("records after = %+v", recs)
	}
}

// opensAll stands for the gateway's opener in recovery tests: every stored
// envelope opens (EnvelopeReopener is exercised by the gateway's e2e tests).
func opensAll([]byte, time.Time) (*runv1.RunSpec, map[string]string, error) {
	return &runv1.RunSpec{RunnerImage: "busybox"}, nil, nil
}

func TestRecoverFailsARunWhoseEnvelopeNoLongerOpens(t *testing.T) {
	store, err := runstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(&runstore.Record{RunID: "bad-1", Envelope: []byte("x"), ReceivedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	d := New(Config{PoolID: "pool-a", Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), Store: store}, rec)
	d.Recover(func([]byte, time.Time) (*runv1.RunSpec, map[string]string, error) {
		return nil, nil, errors.New("expired")
	})
	if f := rec.finals("bad-1"); len(f) != 1 || f[0].GetOutcome() != eventv1.Outcome_OUTCOME_FAILED {
		t.Fatalf("finals = %v", f)
	}
	if d.Known("bad-1") {
		t.Fatal("an unopenable run was restored")
	}
	if recs, _ := store.Load(); len(recs) != 0 {
		t.Fatalf("records left: %+v", recs)
	}
}

// savesStore is a run store that keeps the records it is asked to save, or
// refuses every save.
type savesStore struct {
	mu    sync.Mutex
	saved []runstore.Record
	fail  error
}

func (s *savesStore) Save(r *runstore.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.saved = append(s.saved, *r)
	return nil
}

func (s *savesStore) Delete(string) error                 { return nil }
func (s *savesStore) Load() ([]*runstore.Record, []error) { return nil, nil }

func (s *savesStore) records() []runstore.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]runstore.Record(nil), s.saved...)
}

func startWithStore(t *testing.T, store Store) (*Dispatcher, *recorder, workv1.WorkServiceClient) {
	t.Helper()
	rec := &recorder{}
	d := New(Config{PoolID: "pool-a", LeaseDuration: 10 * time.Second, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), Store: store}, rec)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workv1.RegisterWorkServiceServer(srv, d)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return d, rec, workv1.NewWorkServiceClient(conn)
}

// TestAdmitRecordsARunOnce: a run assigned at once is recorded once, with its
// lease, before its Assign; a run that waits is recorded as queued, then
// with its lease when it is assigned.
func TestAdmitRecordsARunOnce(t *testing.T) {
	store := &savesStore{}
	d, _, c := startWithStore(t, store)
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	if err := d.Admit(context.Background(), run("r1")); err != nil {
		t.Fatal(err)
	}
	as := a.next().GetAssign()
	if got := store.records(); len(got) != 1 || got[0].RunID != "r1" || got[0].LeaseID != as.GetLeaseId() || got[0].StartedSeq == 0 {
		t.Fatalf("records after an immediate assignment = %+v, want one with the lease %s", got, as.GetLeaseId())
	}
	if err := d.Admit(context.Background(), run("r2")); err != nil { // no free slot: waits
		t.Fatal(err)
	}
	if got := store.records(); len(got) != 2 || got[1].RunID != "r2" || got[1].LeaseID != "" {
		t.Fatalf("records after a queued run = %+v, want r2 queued", got)
	}
	a.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: &workv1.Finish{LeaseId: as.GetLeaseId(), Epoch: as.GetEpoch(),
		Result: &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FINISHED}}}})
	var as2 *workv1.Assign
	for as2 == nil {
		as2 = a.next().GetAssign()
	}
	if got := store.records(); as2.GetRunId() != "r2" || len(got) != 3 || got[2].RunID != "r2" || got[2].LeaseID != as2.GetLeaseId() {
		t.Fatalf("records after r2's assignment = %+v (assigned %v)", got, as2)
	}
}

// TestAdmitUnrecordableRunFails: a run that would be assigned at once but
// whose lease cannot be recorded is not assigned; it finishes failed, its
// final event numbered where "started" would have been (no gap in the run's
// sequence).
func TestAdmitUnrecordableRunFails(t *testing.T) {
	store := &savesStore{fail: errors.New("disk full")}
	d, rec, c := startWithStore(t, store)
	a := attach(t, c, &workv1.Hello{ExecutorId: "a", Slots: 1})
	if err := d.Admit(context.Background(), run("r1")); err != nil {
		t.Fatal(err)
	}
	fins := rec.finals("r1")
	if len(fins) != 1 || fins[0].GetOutcome() != eventv1.Outcome_OUTCOME_FAILED {
		t.Fatalf("final events = %v, want one failed", fins)
	}
	rec.mu.Lock()
	seq := rec.ev[len(rec.ev)-1].GetSequence()
	rec.mu.Unlock()
	if seq != 1 {
		t.Errorf("the failure has sequence %d, want the reserved 1", seq)
	}
	if d.Known("r1") {
		t.Error("the failed run is still known")
	}
	// The slot is free: a later run is assigned once its record is written.
	store.mu.Lock()
	store.fail = nil
	store.mu.Unlock()
	if err := d.Admit(context.Background(), run("r2")); err != nil {
		t.Fatal(err)
	}
	if as := a.next().GetAssign(); as.GetRunId() != "r2" {
		t.Fatalf("next message %v, want r2's Assign", as)
	}
}
