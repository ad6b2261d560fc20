package events

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// flaky refuses every other publish, as a broker that comes and goes would.
type flaky struct {
	mu    sync.Mutex
	calls int
	got   []*eventv1.Event
}

func (f *flaky) Publish(_ context.Context, topic string, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls%2 == 1 {
		return errors.New("not connected to the broker")
	}
	ev := &eventv1.Event{}
	if err := proto.Unmarshal(payload, ev); err != nil {
		return err
	}
	if topic != "hangar/pools/p/events" {
		return errors.New("wrong topic " + topic)
	}
	f.got = append(f.got, ev)
	return nil
}

func TestOutboxRetriesAndKeepsOrder(t *testing.T) {
	pub := &flaky{}
	o := NewOutbox(pub, "p", "gw-1", slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go o.Serve(ctx)

	o.Run("r1", nil, &eventv1.Event{Kind: &eventv1.Event_Received{Received: &eventv1.RunReceived{}}})
	o.Run("r2", nil, &eventv1.Event{Kind: &eventv1.Event_Received{Received: &eventv1.RunReceived{}}})
	o.Run("r1", nil, &eventv1.Event{Kind: &eventv1.Event_Admitted{Admitted: &eventv1.RunAdmitted{}}})
	o.Rejected([]byte("bad"), "", &eventv1.EnvelopeRejected{Reason: eventv1.RejectReason_REJECT_REASON_MALFORMED})
	o.Run("r1", nil, &eventv1.Event{Kind: &eventv1.Event_Finished{Finished: &eventv1.RunFinished{}}})
	o.Run("r1", nil, &eventv1.Event{Kind: &eventv1.Event_Received{Received: &eventv1.RunReceived{}}}) // numbering restarts after a final event

	select {
	case <-o.Idle():
	case <-time.After(10 * time.Second):
		t.Fatal("outbox never drained")
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	var ids []string
	for _, e := range pub.got {
		ids = append(ids, e.GetEventId())
		if e.GetPoolId() != "p" || e.GetWorkerId() != "gw-1" || e.GetTimeUnixMs() == 0 {
			t.Fatalf("event not stamped: %v", e)
		}
	}
	want := []string{"r1/1", "r2/1", "r1/2", "envelope/<sha256 of the payload>", "r1/3", "r1/1"}
	if len(ids) != len(want) {
		t.Fatalf("ids = %v", ids)
	}
	for i := range want {
		if i == 3 {
			if ids[i][:9] != "envelope/" {
				t.Fatalf("rejection id = %s", ids[i])
			}
			continue
		}
		if ids[i] != want[i] {
			t.Fatalf("ids = %v, want %v", ids, want)
		}
	}
}

func TestReservedNumbers(t *testing.T) {
	pub := &flaky{}
	o := NewOutbox(pub, "p", "gw-1", slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil, &Recovered{Sequences: map[string]uint64{"r1": 2}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go o.Serve(ctx)
	// A number reserved by an earlier life (recorded elsewhere, say 4, while
	// the journal only knew 2) is used as is, and numbering goes on after it.
	o.RunAt("r1", 4, nil, &eventv1.Event{Kind: &eventv1.Event_Started{Started: &eventv1.RunStarted{ExecutorId: "x"}}})
	o.Run("r1", nil, &eventv1.Event{Kind: &eventv1.Event_Phase{Phase: &eventv1.RunPhase{Phase: "perform"}}})
	if n := o.Reserve("r1"); n != 6 {
		t.Fatalf("Reserve = %d, want 6", n)
	}
	select {
	case <-o.Idle():
	case <-time.After(10 * time.Second):
		t.Fatal("outbox never drained")
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.got) != 2 || pub.got[0].GetEventId() != "r1/4" || pub.got[1].GetEventId() != "r1/5" {
		t.Fatalf("events = %v", pub.got)
	}
}
