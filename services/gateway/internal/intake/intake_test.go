package intake

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/services/gateway/internal/seen"
)

// policyFunc stands in for the policy service's client (the service itself is
// exercised over gRPC by the end-to-end tests).
type policyFunc func(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error)

func (f policyFunc) Evaluate(_ context.Context, in *policyv1.EvaluateRequest, _ ...grpc.CallOption) (*policyv1.EvaluateResponse, error) {
	return f(in)
}

type recorded struct {
	runID   string
	ev      *eventv1.Event
	payload []byte
}

type events struct {
	mu  sync.Mutex
	all []recorded
}

func (e *events) Run(runID string, _ map[string]string, ev *eventv1.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, recorded{runID: runID, ev: ev})
}

func (e *events) Rejected(payload []byte, runID string, rej *eventv1.EnvelopeRejected) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, recorded{runID: runID, ev: &eventv1.Event{Kind: &eventv1.Event_Rejected{Rejected: rej}}, payload: payload})
}

func (e *events) RejectedDigest(_ [32]byte, runID string, rej *eventv1.EnvelopeRejected) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, recorded{runID: runID, ev: &eventv1.Event{Kind: &eventv1.Event_Rejected{Rejected: rej}}})
}

// Announced counts the run's events as the outbox numbers them: a final
// event ends the numbering.
func (e *events) Announced(runID string) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n uint64
	for _, r := range e.all {
		if r.runID != runID {
			continue
		}
		switch r.ev.Kind.(type) {
		case *eventv1.Event_Rejected:
		case *eventv1.Event_Denied, *eventv1.Event_Finished:
			n = 0
		default:
			n++
		}
	}
	return n
}

func (e *events) kinds(runID string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, r := range e.all {
		if r.runID == runID {
			out = append(out, kind(r.ev))
		}
	}
	return out
}

func kind(ev *eventv1.Event) string {
	switch k := ev.Kind.(type) {
	case *eventv1.Event_Received:
		return "received"
	case *eventv1.Event_Admitted:
		return "admitted"
	case *eventv1.Event_Denied:
		return "denied"
	case *eventv1.Event_Finished:
		return "finished:" + k.Finished.GetOutcome().String()
	case *eventv1.Event_Rejected:
		return "rejected:" + runenvelope.ReasonName(k.Rejected.GetReason())
	}
	return "other"
}

type queue struct {
	mu   sync.Mutex
	runs []*Run
	err  error
	// admitHook, if set, is called as Admit begins (e.g. the gateway stops
	// while the run is being stored).
	admitHook func()
}

func (q *queue) Known(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.runs {
		if r.ID == id {
			return true
		}
	}
	return false
}

// end stands for the run's final event: the dispatcher lets it go.
func (q *queue) end(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.runs = slices.DeleteFunc(q.runs, func(r *Run) bool { return r.ID == id })
}

func (q *queue) Admit(_ context.Context, r *Run) error {
	if q.admitHook != nil {
		q.admitHook()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	q.runs = append(q.runs, r)
	return nil
}

type fixture struct {
	in      *Intake
	ev      *events
	q       *queue
	reg     *prometheus.Registry
	signKey ed25519.PrivateKey
	poolKey *rsa.PrivateKey
	seen    []*policyv1.EvaluateRequest
	mu      sync.Mutex
}

func newFixture(t *testing.T, decide policyFunc) *fixture {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	poolKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	store, err := seen.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{ev: &events{}, q: &queue{}, reg: prometheus.NewRegistry(), signKey: priv, poolKey: poolKey}
	f.in = New(Deps{
		Opener: &runenvelope.Opener{PoolID: "pool-a", PoolKey: poolKey, VerifyKey: pub},
		Seen:   store,
		Policy: policyFunc(func(r *policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
			f.mu.Lock()
			f.seen = append(f.seen, r)
			f.mu.Unlock()
			return decide(r)
		}),
		Events: f.ev, Queue: f.q, Metadata: map[string]string{"zone": "a"},
		Tracer: noop.NewTracerProvider().Tracer("t"), Propagator: telemetry.NewPropagator(),
		Logger: slog.New(slog.DiscardHandler), Registry: f.reg,
	})
	return f
}

func (f *fixture) seal(t *testing.T, runID, poolID string, spec *runv1.RunSpec, issued time.Time) []byte {
	t.Helper()
	b, err := runenvelope.Seal(runenvelope.SealParams{SigningKey: f.signKey, PoolKey: &f.poolKey.PublicKey, RunID: runID, PoolID: poolID, Spec: spec, IssuedAt: issued, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var spec = &runv1.RunSpec{
	Type: runv1.RunType_RUN_TYPE_TASK, RunnerImage: "busybox",
	Stack:  &runv1.Stack{Id: "s1", Name: "net", Labels: []string{"prod"}},
	Env:    []*runv1.EnvVar{{Name: "Z_TOKEN", Value: "top-secret-value", Secret: true}, {Name: "A_PLAIN", Value: "x"}},
	Phases: []*runv1.Phase{{Name: "perform", Commands: []string{"echo hi"}}},
}

func allow(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
	return &policyv1.EvaluateResponse{Allowed: true}, nil
}

func TestIntakeOutcomes(t *testing.T) {
	deny := func(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
		return &policyv1.EvaluateResponse{Allowed: false, Deny: []string{"a: frozen", "b: no"}}, nil
	}
	broken := func(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
		return nil, status.Error(codes.Internal, "eval_conflict_error")
	}
	for _, tc := range []struct {
		name   string
		policy policyFunc
		want   []string
		queued int
	}{
		{"allowed", allow, []string{"received", "admitted"}, 1},
		{"denied", deny, []string{"received", "denied"}, 0},
		{"policy error fails the run", broken, []string{"received", "finished:OUTCOME_FAILED"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.policy)
			if err := f.in.Handle(context.Background(), f.seal(t, "r1", "pool-a", spec, time.Now())); err != nil {
				t.Fatal(err)
			}
			if got := f.ev.kinds("r1"); !slices.Equal(got, tc.want) {
				t.Fatalf("events = %v, want %v", got, tc.want)
			}
			if len(f.q.runs) != tc.queued {
				t.Fatalf("queued %d runs, want %d", len(f.q.runs), tc.queued)
			}
		})
	}
}

func TestPolicySeesNamesNeverValues(t *testing.T) {
	f := newFixture(t, allow)
	f.in.Handle(context.Background(), f.seal(t, "r1", "pool-a", spec, time.Now()))
	r := f.seen[0]
	if !slices.Equal(r.GetEnvironmentVariables(), []string{"A_PLAIN", "Z_TOKEN"}) {
		t.Fatalf("env names = %v", r.GetEnvironmentVariables())
	}
	if r.GetRun().GetType() != "TASK" || r.GetPoolId() != "pool-a" || r.GetWorkerMetadata()["zone"] != "a" ||
		!slices.Equal(r.GetRun().GetCommands(), []string{"echo hi"}) || r.GetStack().GetName() != "net" {
		t.Fatalf("input = %v", r)
	}
	if strings.Contains(r.String(), "top-secret-value") {
		t.Fatal("a secret value reached the policy input")
	}
}

func TestRejectionsAndDuplicates(t *testing.T) {
	f := newFixture(t, allow)
	ctx := context.Background()
	good := f.seal(t, "r1", "pool-a", spec, time.Now())
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-3] ^= 0xff // inside the signature

	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"malformed", []byte("garbage"), "rejected:malformed"},
		{"bad signature", tampered, "rejected:bad_signature"},
		{"wrong pool", f.seal(t, "r2", "pool-b", spec, time.Now()), "rejected:wrong_pool"},
		{"expired", f.seal(t, "r3", "pool-a", spec, time.Now().Add(-2*time.Hour)), "rejected:expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.ev.all)
			if err := f.in.Handle(ctx, tc.payload); err != nil {
				t.Fatal(err)
			}
			got := kind(f.ev.all[before].ev)
			if got != tc.want || len(f.ev.all) != before+1 {
				t.Fatalf("got %v (%d events), want one %s", got, len(f.ev.all)-before, tc.want)
			}
		})
	}

	// Delivered twice while the run is in hand (a QoS 1 redelivery): handled
	// once, the copy dropped without an event (no final rejection for a run
	// that goes on).
	f.in.Handle(ctx, good)
	f.in.Handle(ctx, good)
	if got := f.ev.kinds("r1"); !slices.Equal(got, []string{"received", "admitted"}) {
		t.Fatalf("events = %v", got)
	}
	if len(f.q.runs) != 1 {
		t.Fatalf("%d runs queued, want 1", len(f.q.runs))
	}
	if n := testutil.ToFloat64(f.in.redelivered); n != 1 {
		t.Fatalf("redelivered counter = %v", n)
	}
	// Once the run has ended, a copy is a replay: refused.
	f.q.end("r1")
	f.in.Handle(ctx, good)
	if got := f.ev.kinds("r1"); !slices.Equal(got, []string{"received", "admitted", "rejected:replayed"}) {
		t.Fatalf("events = %v", got)
	}
	// A bad signature never attributes the rejection to a run id.
	for _, r := range f.ev.all {
		if kind(r.ev) == "rejected:bad_signature" && r.runID != "" {
			t.Fatal("an unverified run id was reported")
		}
	}
	if n := testutil.ToFloat64(f.in.rejected.WithLabelValues("replayed")); n != 1 {
		t.Fatalf("replayed counter = %v", n)
	}
}

func TestCopyDuringTheIntakeIsDropped(t *testing.T) {
	var f *fixture
	var payload []byte
	inner := make(chan error, 1)
	f = newFixture(t, func(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
		// The broker redelivers while the first copy waits for the policy.
		inner <- f.in.Handle(context.Background(), payload)
		return &policyv1.EvaluateResponse{Allowed: true}, nil
	})
	payload = f.seal(t, "r1", "pool-a", spec, time.Now())
	if err := f.in.Handle(context.Background(), payload); err != nil {
		t.Fatal(err)
	}
	if err := <-inner; err != nil {
		t.Fatal(err)
	}
	if got := f.ev.kinds("r1"); !slices.Equal(got, []string{"received", "admitted"}) {
		t.Fatalf("events = %v", got)
	}
}

func TestQueueFailureFailsTheRun(t *testing.T) {
	f := newFixture(t, allow)
	f.q.err = errors.New("shutting down")
	f.in.Handle(context.Background(), f.seal(t, "r1", "pool-a", spec, time.Now()))
	if got := f.ev.kinds("r1"); !slices.Equal(got, []string{"received", "admitted", "finished:OUTCOME_FAILED"}) {
		t.Fatalf("events = %v", got)
	}
}

func TestShutdownLeavesTheRunUndecided(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(t, func(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
		cancel() // the gateway stops while the policy decides
		return nil, status.Error(codes.Canceled, "context canceled")
	})
	payload := f.seal(t, "r1", "pool-a", spec, time.Now())
	if err := f.in.Handle(ctx, payload); err == nil {
		t.Fatal("an interrupted intake must return an error, so that the message is not acknowledged")
	}
	for _, k := range f.ev.kinds("r1") {
		if strings.HasPrefix(k, "finished") || k == "denied" {
			t.Fatalf("an interrupted run got a final event: %v", f.ev.kinds("r1"))
		}
	}
}
