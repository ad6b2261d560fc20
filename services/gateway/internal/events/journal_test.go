package events

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// down never acknowledges: the broker is unreachable.
type down struct{}

func (down) Publish(ctx context.Context, _ string, _ []byte) error { return context.DeadlineExceeded }

func TestOutboxSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	j, rec, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub := &flaky{calls: 1} // acknowledges the first attempt
	o := NewOutbox(pub, "p", "gw", slog.New(slog.DiscardHandler), prometheus.NewRegistry(), j, rec)
	ctx, cancel := context.WithCancel(context.Background())
	go o.Serve(ctx)
	received := &eventv1.Event{Kind: &eventv1.Event_Received{Received: &eventv1.RunReceived{}}}
	o.Run("r1", nil, received)
	o.Run("done", nil, &eventv1.Event{Kind: &eventv1.Event_Finished{Finished: &eventv1.RunFinished{}}})
	<-o.Idle()
	cancel()
	j.Close()

	// Second life: the broker is down; two more events are produced, then the
	// gateway dies.
	j, rec, err = OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Pending) != 0 || rec.Sequences["r1"] != 1 || rec.Sequences["done"] != 0 {
		t.Fatalf("recovered %+v", rec)
	}
	o = NewOutbox(down{}, "p", "gw", slog.New(slog.DiscardHandler), prometheus.NewRegistry(), j, rec)
	o.Run("r1", nil, &eventv1.Event{Kind: &eventv1.Event_Admitted{Admitted: &eventv1.RunAdmitted{}}})
	o.Rejected([]byte("x"), "", &eventv1.EnvelopeRejected{})
	j.Close()
	// A torn line from the crash.
	f, _ := os.OpenFile(filepath.Join(dir, "events.journal"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("e AAAA")
	f.Close()

	// Third life: what was not acknowledged goes out, numbering continues.
	j, rec, err = OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if len(rec.Pending) != 2 || rec.Pending[0].GetEventId() != "r1/2" || rec.Pending[1].GetEventId()[:9] != "envelope/" {
		t.Fatalf("pending = %v", rec.Pending)
	}
	pub = &flaky{calls: 1}
	o = NewOutbox(pub, "p", "gw", slog.New(slog.DiscardHandler), prometheus.NewRegistry(), j, rec)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go o.Serve(ctx)
	o.Run("r1", nil, &eventv1.Event{Kind: &eventv1.Event_Started{Started: &eventv1.RunStarted{}}})
	select {
	case <-o.Idle():
	case <-time.After(10 * time.Second):
		t.Fatal("recovered events were not published")
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	var ids []string
	for _, e := range pub.got {
		ids = append(ids, e.GetEventId())
	}
	if len(ids) != 3 || ids[0] != "r1/2" || ids[2] != "r1/3" {
		t.Fatalf("published %v; want r1/2, the rejection, r1/3", ids)
	}
}
