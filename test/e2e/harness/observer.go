package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/mqtttopic"
)

// Observer is the control plane's view of a pool: every Event and Heartbeat
// the pool publishes, decoded. It holds a persistent MQTT session (clean
// session off, fixed client id, QoS 1) that reconnects by itself, so that
// events published while it was away (a broker restart, a cut link) are
// delivered when it is back. It keeps every delivery, duplicates included, so
// that tests can tell a redelivery (same event id, same content) from two
// producers (same event id, different worker), and when each delivery
// arrived; Events and RunEvents deduplicate by event id (delivery is at least
// once).
type Observer struct {
	t      testing.TB
	PoolID string

	mu         sync.Mutex
	deliveries []Delivery
	heartbeats []*eventv1.Heartbeat
	bad        []string
	changed    chan struct{}
	connects   int
}

// Delivery is one event as it arrived.
type Delivery struct {
	Event *eventv1.Event
	At    time.Time
	// Index is the arrival position among all deliveries.
	Index int
}

// Observe connects as the control plane (certificate of cpDir) to broker with
// a persistent session and subscribes to the pool's events and heartbeats
// (refused subscriptions fail the test). It is subscribed when it returns.
func Observe(t testing.TB, broker, cpDir, poolID string) *Observer {
	t.Helper()
	r := &Observer{t: t, PoolID: poolID, changed: make(chan struct{})}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, msg := range r.bad {
			t.Errorf("observer of pool %s: %s", poolID, msg)
		}
	})
	var id [6]byte
	_, _ = rand.Read(id[:])
	handler := func(_ mqtt.Client, m mqtt.Message) { r.onMessage(m) }
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID("e2e-obs-" + hex.EncodeToString(id[:])).
		SetTLSConfig(ControlPlaneTLS(t, cpDir)).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(250 * time.Millisecond).
		SetMaxReconnectInterval(time.Second).
		SetConnectTimeout(10 * time.Second).
		SetKeepAlive(5 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(c mqtt.Client) {
			r.mu.Lock()
			r.connects++
			r.mu.Unlock()
			// The session keeps the subscriptions; subscribing again is
			// harmless and covers a broker that lost the session.
			c.Subscribe(mqtttopic.Events(poolID), 1, nil)
			c.Subscribe(mqtttopic.Heartbeats(poolID), 1, nil)
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
		t.Fatalf("observer: connect to %s as the control plane: %v", broker, tok.Error())
	}
	// Subscribed (and so recording) before the caller goes on.
	for _, topic := range []string{mqtttopic.Events(poolID), mqtttopic.Heartbeats(poolID)} {
		if code := Subscribe(t, c, topic, nil); code > 2 {
			t.Fatalf("observer: subscription to %s refused (0x%02x)", topic, code)
		}
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return r
}

func (r *Observer) onMessage(m mqtt.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch m.Topic() {
	case mqtttopic.Events(r.PoolID):
		ev := &eventv1.Event{}
		if err := proto.Unmarshal(m.Payload(), ev); err != nil {
			r.bad = append(r.bad, fmt.Sprintf("undecodable event: %v", err))
			return
		}
		r.deliveries = append(r.deliveries, Delivery{Event: ev, At: time.Now(), Index: len(r.deliveries)})
	case mqtttopic.Heartbeats(r.PoolID):
		hb := &eventv1.Heartbeat{}
		if err := proto.Unmarshal(m.Payload(), hb); err != nil {
			r.bad = append(r.bad, fmt.Sprintf("undecodable heartbeat: %v", err))
			return
		}
		r.heartbeats = append(r.heartbeats, hb)
	default:
		r.bad = append(r.bad, "message on an unexpected topic "+m.Topic())
		return
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// Connects is how many times the observer (re)connected.
func (r *Observer) Connects() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connects
}

// Deliveries returns every event delivery so far, duplicates included, in
// arrival order.
func (r *Observer) Deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.deliveries...)
}

// RunDeliveries returns every delivery of the run's events, in arrival order.
func (r *Observer) RunDeliveries(runID string) []Delivery {
	var out []Delivery
	for _, d := range r.Deliveries() {
		if d.Event.GetRunId() == runID {
			out = append(out, d)
		}
	}
	return out
}

// Events returns the events so far, deduplicated by event id (first copy),
// in arrival order.
func (r *Observer) Events() []*eventv1.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return dedupe(r.deliveries)
}

func dedupe(ds []Delivery) []*eventv1.Event {
	seen := map[string]bool{}
	var out []*eventv1.Event
	for _, d := range ds {
		if seen[d.Event.GetEventId()] {
			continue
		}
		seen[d.Event.GetEventId()] = true
		out = append(out, d.Event)
	}
	return out
}

// RunEvents returns the run's events, deduplicated by id, ordered by sequence.
func (r *Observer) RunEvents(runID string) []*eventv1.Event {
	var out []*eventv1.Event
	for _, ev := range r.Events() {
		if ev.GetRunId() == runID {
			out = append(out, ev)
		}
	}
	sortBySequence(out)
	return out
}

// Heartbeats returns the heartbeats so far, in arrival order.
func (r *Observer) Heartbeats() []*eventv1.Heartbeat {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*eventv1.Heartbeat(nil), r.heartbeats...)
}

// WaitEvent waits up to timeout for an event matching pred and returns it.
func (r *Observer) WaitEvent(timeout time.Duration, what string, pred func(*eventv1.Event) bool) *eventv1.Event {
	r.t.Helper()
	var found *eventv1.Event
	r.wait(timeout, what, func() bool {
		for _, d := range r.deliveries {
			if pred(d.Event) {
				found = d.Event
				return true
			}
		}
		return false
	})
	return found
}

// WaitHeartbeat waits up to timeout for a heartbeat matching pred.
func (r *Observer) WaitHeartbeat(timeout time.Duration, what string, pred func(*eventv1.Heartbeat) bool) *eventv1.Heartbeat {
	r.t.Helper()
	var found *eventv1.Heartbeat
	r.wait(timeout, what, func() bool {
		for _, hb := range r.heartbeats {
			if pred(hb) {
				found = hb
				return true
			}
		}
		return false
	})
	return found
}

// WaitFor waits up to timeout until cond (called with no lock held, after
// each delivery and at least every second) is true.
func (r *Observer) WaitFor(timeout time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("observer of pool %s: no %s within %s", r.PoolID, what, timeout)
		}
		select {
		case <-ch:
		case <-time.After(time.Second):
		}
	}
}

func (r *Observer) wait(timeout time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			var s string
			for _, ev := range r.Events() {
				s += "  " + DescribeEvent(ev) + "\n"
			}
			r.t.Fatalf("observer of pool %s: no %s within %s; events so far:\n%s", r.PoolID, what, timeout, s)
		}
	}
}
