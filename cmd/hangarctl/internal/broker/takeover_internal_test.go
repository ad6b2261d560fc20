package broker

import (
	"context"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
)

// TestTakeoverHoldsBackOnlyItsSession: while a persistent session is being
// taken over (certHook.OnSessionEstablish called, the new client object not
// registered yet), a publish to that session waits, unacknowledged, and
// publishes to other sessions go on; once mochi registers the new object and
// sends its CONNACK, the held publish is queued in the new object's session.
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

	// What mochi does next: register the new object, send its CONNACK.
	b.server.Clients.Add(next)
	b.hook.OnPacketSent(next, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}}, nil)
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
