package intake

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/platform/telemetry"
	gwevents "github.com/hangar-dev/hangar/services/gateway/internal/events"
	"github.com/hangar-dev/hangar/services/gateway/internal/seen"
)

// neverAcked stands for a broker that acknowledges nothing: every event stays
// in the journal, so the journal read after the test holds all the events of
// every life.
type neverAcked struct{}

func (neverAcked) Publish(ctx context.Context, _ string, _ []byte) error {
	return context.DeadlineExceeded
}

// life is one life of a gateway's intake over a data directory: the real seen
// store and the real outbox with its journal (what a restart recovers), a
// queue standing for the dispatcher (whose own store is tested in dispatch).
type life struct {
	in      *Intake
	seen    *seen.Store
	journal *gwevents.Journal
	q       *queue
}

func startLife(t *testing.T, dir string, opener *runenvelope.Opener, decide policyFunc) *life {
	t.Helper()
	store, err := seen.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, rec, err := gwevents.OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	outbox := gwevents.NewOutbox(neverAcked{}, "pool-a", "gw", slog.New(slog.DiscardHandler), reg, j, rec)
	l := &life{seen: store, journal: j, q: &queue{}}
	l.in = New(Deps{
		Opener: opener, Seen: store, Policy: decide, Events: outbox, Queue: l.q,
		Tracer: noop.NewTracerProvider().Tracer("t"), Propagator: telemetry.NewPropagator(),
		Logger: slog.New(slog.DiscardHandler), Registry: reg,
	})
	return l
}

// kill ends a life as SIGKILL does: nothing more is written; what is on disk
// stays.
func (l *life) kill() {
	l.seen.Close()
	l.journal.Close()
}

// journaled returns the events of runID in the journal of dir, as
// "kind/sequence", each id once.
func journaled(t *testing.T, dir, runID string) []string {
	t.Helper()
	j, rec, err := gwevents.OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	var out []string
	for _, ev := range rec.Pending {
		if ev.GetRunId() == runID {
			out = append(out, fmt.Sprintf("%s/%d", kind(ev), ev.GetSequence()))
		}
	}
	return out
}

// TestRestartInTheMiddleOfTheIntake: the gateway stops (killed, or shut down)
// after announcing some of a run's intake events and before it stored the
// run; the broker delivers the run again to the next life, several copies at
// once. The run is announced received and admitted once over both lives
// (never "received admitted received admitted"), and queued once.
func TestRestartInTheMiddleOfTheIntake(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	poolKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	opener := &runenvelope.Opener{PoolID: "pool-a", PoolKey: poolKey, VerifyKey: pub}
	payload, err := runenvelope.Seal(runenvelope.SealParams{SigningKey: priv, PoolKey: &poolKey.PublicKey, RunID: "r1", PoolID: "pool-a", Spec: spec, IssuedAt: time.Now(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		// firstLife runs the first delivery and stops the gateway at its
		// point; it returns what Handle returned.
		firstLife func(t *testing.T, dir string) error
		// policyAsked: whether the second life asks the policy again.
		policyAsked bool
	}{
		{
			name: "after admitted was announced, before the run was stored",
			firstLife: func(t *testing.T, dir string) error {
				ctx, cancel := context.WithCancel(context.Background())
				l := startLife(t, dir, opener, policyFunc(allow))
				// The gateway stops while the dispatcher stores the run.
				l.q.err = context.Canceled
				l.q.admitHook = cancel
				err := l.in.Handle(ctx, payload)
				l.kill()
				return err
			},
		},
		{
			name: "after received was announced, while the policy decided",
			firstLife: func(t *testing.T, dir string) error {
				ctx, cancel := context.WithCancel(context.Background())
				l := startLife(t, dir, opener, func(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
					cancel()
					return nil, status.Error(codes.Canceled, "context canceled")
				})
				err := l.in.Handle(ctx, payload)
				l.kill()
				return err
			},
			policyAsked: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.firstLife(t, dir); err == nil {
				t.Fatal("an interrupted intake must return an error, so that the message is not acknowledged")
			}
			before := journaled(t, dir, "r1")

			var asked sync.Mutex
			policyCalls := 0
			l := startLife(t, dir, opener, func(*policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
				asked.Lock()
				policyCalls++
				asked.Unlock()
				return &policyv1.EvaluateResponse{Allowed: true}, nil
			})
			defer l.kill()
			// The broker's redelivery and copies of it, at once.
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = l.in.Handle(context.Background(), payload)
				}()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			l.kill()

			got := journaled(t, dir, "r1")
			if want := []string{"received/1", "admitted/2"}; !slices.Equal(got, want) {
				t.Fatalf("events of both lives %v (first life %v), want %v", got, before, want)
			}
			if len(l.q.runs) != 1 {
				t.Fatalf("the second life queued the run %d times, want once", len(l.q.runs))
			}
			if tc.policyAsked != (policyCalls > 0) || policyCalls > 1 {
				t.Fatalf("the second life asked the policy %d times, want asked: %v (once at most)", policyCalls, tc.policyAsked)
			}
			store, err := seen.Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			if !store.Decided("r1") {
				t.Fatal("the decision of the run taken up again is not recorded")
			}
		})
	}
}
