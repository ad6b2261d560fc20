package broker_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
)

// TestSessionTakeoverLosesNothing is what the control plane's observer does
// in the failover tests: a persistent QoS 1 session (clean session off, fixed
// client id) that goes away and comes back, here again and again, while a
// pool publishes a stream of numbered events. Each reconnection takes the
// session over (the previous connection's, or the offline session restored
// from the store after a broker restart); every event the broker
// acknowledged must reach the session at least once. On the embedded broker,
// with or without its session store, mochi v2.7.9 queued events published
// during a takeover on the client object being replaced, where nothing sent
// them (see certHook).
func TestSessionTakeoverLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes a few thousand events")
	}
	const (
		events = 1000
		window = 32 // publishes in flight at a time
	)
	for _, tt := range targets {
		t.Run(tt.name, func(t *testing.T) {
			tg := tt.start(t)
			rec := newRecorder(t)
			session := brokertest.ClientOptions{ID: "observer-session", Persistent: true}
			sub := tg.dial(t, cp, session)
			rec.drain(sub)
			wantRC(t, sub, eventsOf("pool-a"), 1)
			if tg.restart != nil {
				// The session is offline when the broker stops: after the
				// restart, the first takeover is of the session restored from
				// the store.
				sub.Disconnect(100)
				tg.restart(t)
			}

			pub := tg.dial(t, "pool-a", brokertest.ClientOptions{})
			published := make(chan error, 1)
			go func() { published <- publishNumbered(pub, eventsOf("pool-a"), events, window) }()

			takeovers := 0
			for done := false; !done; {
				c, err := brokertest.Dial(tg.addr, tg.pki.ClientTLS(t, tg.pki, cp), session)
				if err != nil {
					t.Fatalf("reconnect %d: %v", takeovers, err)
				}
				takeovers++
				rec.drain(c)
				// Connected for a moment, then gone (alternately dropped
				// uncleanly and disconnected), away for a moment: events queue
				// in the session meanwhile.
				time.Sleep(time.Duration(takeovers%7) * 3 * time.Millisecond)
				if takeovers%2 == 0 {
					c.DropConnection()
				}
				c.Disconnect(0)
				select {
				case err := <-published:
					if err != nil {
						t.Fatal(err)
					}
					done = true
				case <-time.After(time.Duration(takeovers%5) * 4 * time.Millisecond):
				}
			}

			last := tg.dial(t, cp, session)
			rec.drain(last)
			missing := rec.waitAll(events, 30*time.Second)
			t.Logf("%d events, %d takeovers of the session, %d deliveries", events, takeovers, rec.deliveries())
			if len(missing) > 0 {
				t.Errorf("%d of %d events acknowledged by the broker never reached the persistent session across %d takeovers: %s",
					len(missing), events, takeovers, ranges(missing))
			}
		})
	}
}

// publishNumbered publishes payloads 0..n-1 at QoS 1 to topic, up to window
// unacknowledged at a time, and returns once the broker acknowledged each.
func publishNumbered(c *brokertest.Client, topic string, n, window int) error {
	return publishRange(c, topic, 0, n, window)
}

// publishRange is publishNumbered for payloads from..to-1.
func publishRange(c *brokertest.Client, topic string, from, to, window int) error {
	type pending struct {
		i   int
		tok interface {
			WaitTimeout(time.Duration) bool
			Error() error
		}
	}
	var inflight []pending
	wait := func(p pending) error {
		if !p.tok.WaitTimeout(30 * time.Second) {
			return fmt.Errorf("publish %d: not acknowledged within 30s", p.i)
		}
		if err := p.tok.Error(); err != nil {
			return fmt.Errorf("publish %d: %w", p.i, err)
		}
		return nil
	}
	for i := from; i < to; i++ {
		inflight = append(inflight, pending{i, c.Client.Publish(topic, 1, false, strconv.Itoa(i))})
		if len(inflight) == window {
			if err := wait(inflight[0]); err != nil {
				return err
			}
			inflight = inflight[1:]
		}
	}
	for _, p := range inflight {
		if err := wait(p); err != nil {
			return err
		}
	}
	return nil
}

// recorder collects the numbered payloads that the connections of one
// session received.
type recorder struct {
	t    *testing.T
	stop chan struct{}

	mu      sync.Mutex
	got     map[int]int
	bad     []string
	changed chan struct{}
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{t: t, stop: make(chan struct{}), got: map[int]int{}, changed: make(chan struct{}, 1)}
	t.Cleanup(func() { close(r.stop) })
	return r
}

// drain records what c receives until the end of the test (a connection's
// messages are read even after it is gone, so that paho never blocks).
func (r *recorder) drain(c *brokertest.Client) {
	go func() {
		for {
			select {
			case m := <-c.Messages:
				r.mu.Lock()
				if n, err := strconv.Atoi(m.Payload); err == nil {
					r.got[n]++
				} else {
					r.bad = append(r.bad, m.Topic+" "+m.Payload)
				}
				r.mu.Unlock()
				select {
				case r.changed <- struct{}{}:
				default:
				}
			case <-r.stop:
				return
			}
		}
	}()
}

func (r *recorder) deliveries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.got {
		n += k
	}
	return n
}

// waitAll waits up to timeout for payloads 0..n-1 and returns those missing.
func (r *recorder) waitAll(n int, timeout time.Duration) []int {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		var missing []int
		for i := range n {
			if r.got[i] == 0 {
				missing = append(missing, i)
			}
		}
		bad := r.bad
		r.mu.Unlock()
		if len(bad) > 0 {
			r.t.Errorf("unexpected messages: %q", bad)
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-r.changed:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			return missing
		}
	}
}

// ranges writes sorted numbers as "3-5, 9".
func ranges(ns []int) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(ns[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// TestTakeoverKeepsStoredSession: a connection that takes a persistent
// session over and is gone before the session's queued messages are resent
// to it leaves them queued, in the session store too, so that they are
// delivered after a broker restart. mochi v2.7.9 deleted them from the store
// as it cleared the replaced connection's copy, and stored them again only as
// it resent them (see sessionStore). The resend is made to fail at its first
// message deterministically: the taking-over connection (MQTT 5) announces a
// maximum packet size smaller than the messages.
func TestTakeoverKeepsStoredSession(t *testing.T) {
	tg := startEmbedded(t, true)
	const queued = 10
	session := brokertest.ClientOptions{ID: "observer-session", Persistent: true}
	sub := tg.dial(t, cp, session)
	wantRC(t, sub, eventsOf("pool-a"), 1)
	sub.Disconnect(100)
	pub := tg.dial(t, "pool-a", brokertest.ClientOptions{})
	payload := strings.Repeat("x", 200)
	for i := range queued {
		pub.Publish(t, eventsOf("pool-a"), fmt.Sprintf("%02d%s", i, payload))
	}
	pub.Disconnect(100)

	takeOverWithPacketLimit(t, tg, session.ID, 64)
	tg.restart(t)

	sub = tg.dial(t, cp, session)
	got := map[string]bool{}
	deadline := time.After(wait)
	for len(got) < queued {
		select {
		case m := <-sub.Messages:
			got[m.Payload[:2]] = true
		case <-deadline:
			t.Fatalf("after the takeover and a restart, the session delivered %d of its %d queued messages (%v)", len(got), queued, got)
		}
	}
}

// takeOverWithPacketLimit connects to the session id as the control plane
// over MQTT 5 with a maximum packet size of limit bytes and a session that
// does not expire, and returns once the broker closed the connection.
func takeOverWithPacketLimit(t *testing.T, tg *target, id string, limit uint32) {
	t.Helper()
	conn, err := tls.Dial("tcp", tg.addr, tg.pki.ClientTLS(t, tg.pki, cp))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: id,
			Keepalive:        30,
		},
		Properties: packets.Properties{
			MaximumPacketSize:         limit,
			SessionExpiryInterval:     3600,
			SessionExpiryIntervalFlag: true,
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatalf("encode CONNECT: %v", err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatalf("send CONNECT: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	var connack [2]byte
	if _, err := io.ReadFull(conn, connack[:]); err != nil || connack[0]>>4 != packets.Connack {
		t.Fatalf("no CONNACK (%x): %v", connack, err)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, io.EOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the broker kept the connection open although it cannot send the queued messages")
		}
	}
}
