package broker

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
)

// TestTakeoverHoldsBackOnlyItsSession: while a persistent session is being
// taken over (certHook.OnSessionEstablish called, the new client object not
// registered yet), a publish to that session waits, unacknowledged, and
// publishes to other sessions go on; once mochi registers the new object,
// sends its CONNACK and the session's queued messages were resent
// (OnSessionEstablished), the held publish is queued in the new object's
// session.
// The takeover is driven by calling the hook as mochi does, so that it can be
// held open.
func TestTakeoverHoldsBackOnlyItsSession(t *testing.T) {
	const wait = 5 * time.Second
	pki := brokertest.NewPKI(t, "hangar-test-ca")
	b, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS()})
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	dial := func(cn, id string, persistent bool) *brokertest.Client {
		return brokertest.MustDial(t, b.Addr(), pki.ClientTLS(t, pki, cn), brokertest.ClientOptions{ID: id, Persistent: persistent})
	}
	obsA := dial(DefaultControlPlaneCN, "observer-a", true)
	obsA.Subscribe(t, "hangar/pools/pool-a/events")
	obsB := dial(DefaultControlPlaneCN, "observer-b", true)
	obsB.Subscribe(t, "hangar/pools/pool-b/events")
	obsA.Disconnect(100)
	deadline := time.Now().Add(wait)
	for {
		if cl, ok := b.server.Clients.Get("observer-a"); ok && cl.Closed() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("observer-a's session is not offline")
		}
		time.Sleep(10 * time.Millisecond)
	}

	next := b.server.NewClient(nil, "mqtts", "observer-a", false)
	next.Properties.Username = []byte(DefaultControlPlaneCN) // as OnConnectAuthenticate sets it
	b.hook.OnSessionEstablish(next, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "observer-a"}})

	pubA := dial("pool-a", "publisher-a", false)
	pubB := dial("pool-b", "publisher-b", false)
	held := pubA.Client.Publish("hangar/pools/pool-a/events", 1, false, "to-a")
	other := pubB.Client.Publish("hangar/pools/pool-b/events", 1, false, "to-b")
	if !other.WaitTimeout(3*time.Second) || other.Error() != nil {
		t.Fatalf("a publish to another session was held back by the takeover (err %v)", other.Error())
	}
	obsB.Expect(t, "hangar/pools/pool-b/events", "to-b", wait)
	if held.WaitTimeout(300 * time.Millisecond) {
		t.Fatalf("a publish to the session being taken over was handled during the takeover (err %v)", held.Error())
	}

	// What mochi does next: register the new object, send its CONNACK (and
	// resend what the session queued), then call OnSessionEstablished.
	b.server.Clients.Add(next)
	b.hook.OnSessionEstablished(next, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "observer-a"}})
	if !held.WaitTimeout(wait) || held.Error() != nil {
		t.Fatalf("the held publish was not acknowledged after the takeover: %v", held.Error())
	}
	deadline = time.Now().Add(wait)
	for {
		found := false
		for _, pk := range next.State.Inflight.GetAll(false) {
			found = found || string(pk.Payload) == "to-a"
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the held publish is not queued in the new client object's session")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTakeoverKeepsQueuedIDs: a message that mochi queues in a session
// being taken over without the hook holding it back (a Last Will: mochi
// publishes it without OnPublish) can get the packet id of one of the
// messages the hook took out of the session to resend them in order; both
// are kept, in the session and in the store (the queued one under a new
// id), and delivered after a restart.
func TestTakeoverKeepsQueuedIDs(t *testing.T) {
	const wait = 5 * time.Second
	pki := brokertest.NewPKI(t, "hangar-test-ca")
	cfg := Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(), DataDir: t.TempDir()}
	b, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	dial := func(cn string, o brokertest.ClientOptions) *brokertest.Client {
		return brokertest.MustDial(t, b.Addr(), pki.ClientTLS(t, pki, cn), o)
	}
	obs := dial(DefaultControlPlaneCN, brokertest.ClientOptions{ID: "observer-a", Persistent: true})
	obs.Subscribe(t, "hangar/pools/pool-a/events")
	obs.Disconnect(100)
	pub := dial("pool-a", brokertest.ClientOptions{ID: "publisher-a"})
	queued := []string{"q0", "q1", "q2"}
	for _, p := range queued {
		pub.Publish(t, "hangar/pools/pool-a/events", p)
	}
	pub.Disconnect(100)

	// mochi's takeover, driven as in TestTakeoverHoldsBackOnlyItsSession.
	next := b.server.NewClient(nil, "mqtts", "observer-a", false)
	next.Properties.Username = []byte(DefaultControlPlaneCN)
	b.hook.OnSessionEstablish(next, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "observer-a"}})
	b.server.Clients.Add(next)
	// A pool client's Last Will goes to the session meanwhile.
	willer := dial("pool-a", brokertest.ClientOptions{ID: "willer-a", Will: &brokertest.Will{Topic: "hangar/pools/pool-a/events", Payload: "will"}})
	willer.DropConnection()
	deadline := time.Now().Add(wait)
	for next.State.Inflight.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the Last Will is not queued in the session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.hook.OnSessionEstablished(next, packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "observer-a"}})

	want := map[string]bool{"q0": true, "q1": true, "q2": true, "will": true}
	got := map[string]bool{}
	for _, pk := range next.State.Inflight.GetAll(false) {
		got[string(pk.Payload)] = true
	}
	if !maps.Equal(got, want) {
		t.Errorf("the session holds %v after the takeover, want %v", got, want)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Addr = b.Addr()
	b, err = Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	obs = dial(DefaultControlPlaneCN, brokertest.ClientOptions{ID: "observer-a", Persistent: true})
	got = map[string]bool{}
	timeout := time.After(wait)
	for len(got) < len(want) {
		select {
		case m := <-obs.Messages:
			got[m.Payload] = true
		case <-timeout:
			t.Fatalf("after a restart the session delivered %v, want %v", got, want)
		}
	}
}
