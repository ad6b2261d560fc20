package broker_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
)

// TestResumedSessionKeepsOrder: a persistent QoS 1 session that comes back
// gets the messages queued for it while it was away in the order they were
// published, before the ones published as it comes back [MQTT-4.6.0-1,
// MQTT-4.6.0-2], also when they were queued before a broker restart. That
// is what the control plane relies on when a run's final event arrives: the
// run's earlier events arrived before it. mochi v2.7.9 resent a resumed
// session's messages sorted by the second they were published in (and in
// map order within a second), and the publishes held back during the
// takeover went out before them: after a broker restart the observer of the
// failover test got a run's final event before its started and phase events
// (see certHook).
func TestResumedSessionKeepsOrder(t *testing.T) {
	const (
		queued = 300 // published while the session is away
		live   = 300 // published while it comes back
	)
	for _, tt := range targets {
		for _, restart := range []bool{false, true} {
			if restart && !tt.restarts {
				continue // its sessions do not survive a restart
			}
			name := tt.name + "/resumed"
			if restart {
				name = tt.name + "/resumed after a restart"
			}
			t.Run(name, func(t *testing.T) {
				tg := tt.start(t)
				session := brokertest.ClientOptions{ID: "observer-session", Persistent: true}
				sub := tg.dial(t, cp, session)
				wantRC(t, sub, eventsOf("pool-a"), 1)
				sub.Disconnect(100)

				pub := tg.dial(t, "pool-a", brokertest.ClientOptions{})
				if err := publishNumbered(pub, eventsOf("pool-a"), queued, 32); err != nil {
					t.Fatal(err)
				}
				if restart {
					pub.Disconnect(100)
					tg.restart(t)
					pub = tg.dial(t, "pool-a", brokertest.ClientOptions{})
				}

				rec := &orderRecorder{seen: map[int]bool{}}
				published := make(chan error, 1)
				go func() { published <- publishRange(pub, eventsOf("pool-a"), queued, queued+live, 1) }()
				sub = tg.dial(t, cp, session)
				stop := rec.drain(sub)
				defer stop()
				if err := <-published; err != nil {
					t.Fatal(err)
				}
				firsts := rec.wait(queued+live, 30*time.Second)
				if len(firsts) < queued+live {
					t.Fatalf("%d of %d messages arrived", len(firsts), queued+live)
				}
				for i, n := range firsts {
					if n != i {
						t.Fatalf("messages out of order: the first arrivals from place %d are %v, want %d, %d, ...", i, firsts[i:min(i+10, len(firsts))], i, i+1)
					}
				}
			})
		}
	}
}

// orderRecorder keeps the numbered payloads in the order of their first
// arrival.
type orderRecorder struct {
	mu     sync.Mutex
	seen   map[int]bool
	firsts []int
	bad    []string
}

// drain records what c receives until stop is called.
func (r *orderRecorder) drain(c *brokertest.Client) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case m := <-c.Messages:
				r.mu.Lock()
				if n, err := strconv.Atoi(m.Payload); err == nil {
					if !r.seen[n] {
						r.seen[n] = true
						r.firsts = append(r.firsts, n)
					}
				} else {
					r.bad = append(r.bad, fmt.Sprintf("%s %q", m.Topic, m.Payload))
				}
				r.mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// wait waits up to timeout for n distinct messages and returns the first
// arrivals so far.
func (r *orderRecorder) wait(n int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		got := append([]int(nil), r.firsts...)
		r.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}
