// Package events numbers a pool's run events and publishes them to the control
// plane in order, at least once: an event is retried with backoff until the broker
// acknowledges it (QoS 1), so a broker outage delays events but loses none; with
// a Journal, neither does a gateway restart.
package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
)

// Publisher publishes one payload with QoS 1 and returns once the broker
// acknowledged it.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte) error
}

// Outbox queues events and publishes them in order.
type Outbox struct {
	pub      Publisher
	topic    string
	poolID   string
	workerID string
	log      *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	queue    []*eventv1.Event
	wake     chan struct{}
	idle     chan struct{} // closed when the queue is empty and nothing is in flight
	seq      map[string]uint64
	pending  int
	inflight *eventv1.Event // being published (pending == 1)
	journal  *Journal       // nil: events live in memory only
	writes   int

	published *prometheus.CounterVec
	failures  prometheus.Counter
	depth     prometheus.Gauge
}

// NewOutbox returns an outbox publishing to the pool's events topic. With a
// journal (and what it recovered), events survive a restart.
func NewOutbox(pub Publisher, poolID, workerID string, log *slog.Logger, reg prometheus.Registerer, journal *Journal, rec *Recovered) *Outbox {
	o := &Outbox{
		pub: pub, topic: mqtttopic.Events(poolID), poolID: poolID, workerID: workerID,
		log: log, now: time.Now, wake: make(chan struct{}, 1), seq: map[string]uint64{},
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hangar_gateway_events_published_total",
			Help: "Events acknowledged by the broker, by kind.",
		}, []string{"kind"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hangar_gateway_event_publish_failures_total",
			Help: "Failed attempts to publish an event (each is retried).",
		}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hangar_gateway_events_pending",
			Help: "Events waiting to be acknowledged by the broker.",
		}),
	}
	o.idle = make(chan struct{})
	o.journal = journal
	if rec != nil {
		o.queue = append(o.queue, rec.Pending...)
		for run, n := range rec.Sequences {
			o.seq[run] = n
		}
	}
	if len(o.queue) == 0 {
		close(o.idle)
	} else {
		log.Info("resending events not acknowledged before the restart", "events", len(o.queue))
	}
	o.depth.Set(float64(len(o.queue)))
	reg.MustRegister(o.published, o.failures, o.depth)
	return o
}

// Run emits a run event: it gets the run's next sequence number and the id
// "{run_id}/{sequence}". A final event (denied, finished) ends the numbering.
func (o *Outbox) Run(runID string, trace map[string]string, ev *eventv1.Event) {
	o.mu.Lock()
	o.seq[runID]++
	ev.Sequence = o.seq[runID]
	if isFinal(ev) {
		delete(o.seq, runID)
	}
	o.mu.Unlock()
	ev.RunId = runID
	ev.EventId = fmt.Sprintf("%s/%d", runID, ev.Sequence)
	ev.TraceContext = trace
	o.enqueue(ev)
}

// Announced returns the sequence number of the run's last event taken so far
// (in this life or, with a journal, in an earlier one: the journal keeps the
// counter of every run without a final event); 0 if none, or once the run's
// final event was taken.
func (o *Outbox) Announced(runID string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seq[runID]
}

// Reserve takes the run's next sequence number without emitting an event;
// RunAt emits the event that uses it.
func (o *Outbox) Reserve(runID string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq[runID]++
	return o.seq[runID]
}

// RunAt emits a run event with a sequence number taken by Reserve, possibly
// by an earlier life of the gateway (recorded with the run): it has the id
// "{run_id}/{seq}" again, so a copy already published is deduplicated by
// receivers. Numbering goes on after seq.
func (o *Outbox) RunAt(runID string, seq uint64, trace map[string]string, ev *eventv1.Event) {
	o.mu.Lock()
	if o.seq[runID] < seq {
		o.seq[runID] = seq
	}
	ev.Sequence = seq
	if isFinal(ev) {
		delete(o.seq, runID)
	}
	o.mu.Unlock()
	ev.RunId = runID
	ev.EventId = fmt.Sprintf("%s/%d", runID, seq)
	ev.TraceContext = trace
	o.enqueue(ev)
}

// Rejected emits the rejection of an envelope. Its id derives from the payload,
// so a second delivery of the same bad payload carries the same event id.
func (o *Outbox) Rejected(payload []byte, runID string, rej *eventv1.EnvelopeRejected) {
	o.RejectedDigest(sha256.Sum256(payload), runID, rej)
}

// RejectedDigest is Rejected for a payload known only by its SHA-256 (one
// too large to be kept in memory).
func (o *Outbox) RejectedDigest(sum [32]byte, runID string, rej *eventv1.EnvelopeRejected) {
	o.enqueue(&eventv1.Event{
		EventId: "envelope/" + hex.EncodeToString(sum[:]),
		RunId:   runID,
		Kind:    &eventv1.Event_Rejected{Rejected: rej},
	})
}

// CommandResult emits the answer to a command, with the id
// "command/{command_id}/{worker_id}" ("…/replayed" for the refusal of a copy of
// a command already handled), so that a re-publication carries the same id.
func (o *Outbox) CommandResult(res *eventv1.CommandResult) {
	id := "command/" + res.GetCommandId() + "/" + o.workerID
	if res.GetRefusal() == eventv1.CommandRefusal_COMMAND_REFUSAL_REPLAYED {
		id += "/replayed"
	}
	o.enqueue(&eventv1.Event{EventId: id, Kind: &eventv1.Event_CommandResult{CommandResult: res}})
}

func isFinal(ev *eventv1.Event) bool {
	switch ev.Kind.(type) {
	case *eventv1.Event_Denied, *eventv1.Event_Finished:
		return true
	}
	return false
}

func (o *Outbox) enqueue(ev *eventv1.Event) {
	ev.PoolId = o.poolID
	ev.WorkerId = o.workerID
	ev.TimeUnixMs = o.now().UnixMilli()
	o.mu.Lock()
	if o.journal != nil {
		if err := o.journal.Append(ev); err != nil {
			o.log.Error("event not journaled: it would be lost if the gateway stopped now", "event_id", ev.EventId, "err", err)
		}
		o.compactLocked()
	}
	if len(o.queue) == 0 && o.pending == 0 {
		o.idle = make(chan struct{})
	}
	o.queue = append(o.queue, ev)
	o.depth.Set(float64(len(o.queue) + o.pending))
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Serve publishes queued events until ctx is done.
func (o *Outbox) Serve(ctx context.Context) error {
	for {
		o.mu.Lock()
		var ev *eventv1.Event
		if len(o.queue) > 0 {
			ev = o.queue[0]
			o.queue = o.queue[1:]
			o.pending = 1
			o.inflight = ev
		}
		o.mu.Unlock()
		if ev == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-o.wake:
				continue
			}
		}
		if err := o.publish(ctx, ev); err != nil {
			// ctx is done: put it back for a later Flush.
			o.mu.Lock()
			o.queue = append([]*eventv1.Event{ev}, o.queue...)
			o.pending = 0
			o.inflight = nil
			o.mu.Unlock()
			return nil
		}
		o.mu.Lock()
		if o.journal != nil {
			if err := o.journal.Acked(ev.EventId); err != nil {
				o.log.Warn("acknowledgement not journaled: the event may be sent again after a restart", "event_id", ev.EventId, "err", err)
			}
		}
		o.pending = 0
		o.inflight = nil
		o.depth.Set(float64(len(o.queue)))
		if len(o.queue) == 0 {
			close(o.idle)
		}
		o.mu.Unlock()
	}
}

func (o *Outbox) publish(ctx context.Context, ev *eventv1.Event) error {
	payload, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("events: marshal: %w", err) // cannot happen for a valid message
	}
	backoff := 100 * time.Millisecond
	for {
		err := o.pub.Publish(ctx, o.topic, payload)
		if err == nil {
			o.published.WithLabelValues(kindName(ev)).Inc()
			return nil
		}
		o.failures.Inc()
		o.log.Warn("publishing event failed, will retry", "event_id", ev.EventId, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// compactLocked rewrites the journal now and then, keeping what is pending.
func (o *Outbox) compactLocked() {
	o.writes++
	if o.writes < 10000 {
		return
	}
	o.writes = 0
	rec := &Recovered{Sequences: map[string]uint64{}}
	if o.inflight != nil {
		rec.Pending = append(rec.Pending, o.inflight)
	}
	rec.Pending = append(rec.Pending, o.queue...)
	for run, n := range o.seq {
		rec.Sequences[run] = n
	}
	if err := o.journal.Rewrite(rec); err != nil {
		o.log.Warn("compacting the events journal failed", "err", err)
	}
}

// Idle returns a channel closed when every queued event has been published.
func (o *Outbox) Idle() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.idle
}

func kindName(ev *eventv1.Event) string {
	switch ev.Kind.(type) {
	case *eventv1.Event_Received:
		return "received"
	case *eventv1.Event_Denied:
		return "denied"
	case *eventv1.Event_Admitted:
		return "admitted"
	case *eventv1.Event_Started:
		return "started"
	case *eventv1.Event_Phase:
		return "phase"
	case *eventv1.Event_Finished:
		return "finished"
	case *eventv1.Event_Rejected:
		return "rejected"
	case *eventv1.Event_Unconfirmed:
		return "unconfirmed"
	case *eventv1.Event_CommandResult:
		return "command_result"
	}
	return "unknown"
}
