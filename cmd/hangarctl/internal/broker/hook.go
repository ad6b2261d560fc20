package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// certHook authenticates clients by their verified TLS client certificate and
// applies the topic rules of acl. It keeps the identity (the certificate CN) in
// the client's username, as Mosquitto's use_identity_as_username does, so that
// it is persisted with the session and restored after a restart.
//
// It also closes windows in which mochi v2.7.9 loses QoS 1 messages (that it
// acknowledged to their publisher, or queued for a client):
//
//   - Shutdown. mochi acknowledges a QoS 1 publish before it hands the message
//     to the subscribers (and to the session store). On shutdown the broker
//     stops taking publishes (closing: no PUBACK, so publishers resend after
//     the restart) and waits for the ones being handed over before the store
//     closes.
//   - Session takeover. When a client connects to an existing persistent
//     session, mochi's inheritClientSession (server.go:562) marks the old
//     client object taken over, copies its in-flight messages to the new one
//     (server.go:574) and clears them from the old one (server.go:592), and
//     only then registers the new object (s.Clients.Add, server.go:458). A
//     publish handed over meanwhile finds the old object in s.Clients
//     (publishToSubscribers, server.go:1015) and is queued there
//     (publishToClient, server.go:1083), after the copy: it is
//     never sent, and with the session store the clearing even takes one
//     fsync per queued message, so the window lasts milliseconds. The hook
//     holds new publishes to the session back from the moment it is about to
//     be inherited until the new client object is registered and
//     acknowledged, and waits for the publishes to it already being handed
//     over before mochi copies the session (OnSessionEstablish).
//   - Order of a resumed session. mochi resends the messages queued in a
//     resumed session (ResendInflightMessages, clients.go:304, called from
//     attachClient, server.go:468, after the CONNACK) in the order of
//     Inflight.GetAll (inflight.go:74): sorted by uint16(Created), the second
//     the message was published in (inflight.go:86), and in map order within
//     a second; and a publish to the session released once the CONNACK was
//     sent could go out before them. MQTT 3.1.1 wants them resent in the order they were first
//     sent, each topic ordered [MQTT-4.6.0-1, MQTT-4.6.0-2], and Mosquitto
//     does so; the control plane takes a run's final event as the sign that
//     the run's earlier events arrived (after a broker restart, the failover
//     test's observer got a run's "finished" before its "started" and phase
//     events, queued in the same second). The hook takes the queued messages
//     out of the session before mochi copies it, resends them itself in the
//     order they were queued (queueOrder) once mochi has set the connection
//     up (OnSessionEstablished), and only then releases the publishes to the
//     session.
//   - A client's own packet ids. mochi keeps the messages queued for a
//     client and the acknowledgements of the client's incoming QoS 1 and 2
//     publishes in one map by packet id, and takes a client's publish whose
//     id is that of a message queued for it for a resend of one it
//     acknowledged: it deletes the queued message from the session
//     (processPublish, server.go:894), and the acknowledgement it then
//     stores and deletes under that id takes the stored copy with it. Client and server
//     number their messages independently (MQTT 3.1.1 §2.3.1), as Mosquitto
//     does; a gateway's heartbeat deleted a run queued for the gateway, lost
//     if the gateway went away before acknowledging it. The hook keeps a
//     copy of such a message as the publish is read (OnPacketRead) and puts
//     it back once mochi has processed the publish (unshadow).
type certHook struct {
	mqtt.HookBase
	acl    acl
	server *mqtt.Server
	log    *slog.Logger
	order  *queueOrder
	// requeued stores again a queued message given a new packet id (the
	// session store's, nil without one).
	requeued func(cl *mqtt.Client, pk packets.Packet, rank int64)

	mu   sync.Mutex
	cond *sync.Cond // signalled when active, takeovers or closing change
	// active holds, per publishing client, the publishes between OnPublish
	// and OnPublished (or the publisher's disconnection, when mochi could not
	// acknowledge and so never hands the message over), each as the client
	// ids it goes to.
	active map[*mqtt.Client][]map[string]bool
	// takeovers holds the sessions being inherited, by the client object
	// taking each over: publishes to its client id wait in OnPublish while
	// it holds them.
	takeovers map[*mqtt.Client]*takeover
	closing   bool
	// shadowed holds, per client, the message queued for it that mochi is
	// about to delete because the client's own publish being read has its
	// packet id, until it is put back (see OnPacketRead); a takeover of the
	// session waits for it.
	shadowed map[*mqtt.Client]shadowed
}

// shadowed is a message queued for a client whose packet id the client's
// own publish reuses, and its rank (queueOrder).
type shadowed struct {
	pk   packets.Packet
	rank int64
}

// takeover is a session being inherited.
type takeover struct {
	id string
	// holding: publishes to the session wait (until the queued messages were
	// resent to the new connection, it closed, or takeoverWait passed).
	holding bool
	// queued are the messages queued in the session, taken out of the
	// replaced client object, in the order they were queued, and ranks
	// their ranks (queueOrder).
	queued []packets.Packet
	ranks  []int64
	// adopted: queued were put back in the session (the new client object).
	adopted bool
	// resent: OnSessionEstablished wrote queued to the new connection.
	resent bool
}

// takeoverWait bounds each of the two waits of a session takeover: for the
// publishes to the session being handed over, then for the new connection to
// be registered and sent its CONNACK (so publishes to the session are held
// back for at most twice as long). Both normally take microseconds to
// milliseconds; the bound only keeps a stuck connection (a publisher blocked
// writing its acknowledgement, a client not reading its CONNACK) from
// stopping the publishes to a session for long.
const takeoverWait = 5 * time.Second

func newCertHook(a acl, server *mqtt.Server, log *slog.Logger, order *queueOrder) *certHook {
	h := &certHook{acl: a, server: server, log: log, order: order, active: map[*mqtt.Client][]map[string]bool{}, takeovers: map[*mqtt.Client]*takeover{}, shadowed: map[*mqtt.Client]shadowed{}}
	h.cond = sync.NewCond(&h.mu)
	return h
}

// ID returns the id of the hook.
func (h *certHook) ID() string { return "hangar-cert-acl" }

// Provides reports which hook methods certHook implements.
func (h *certHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished, mqtt.OnPublish, mqtt.OnPublished, mqtt.OnDisconnect,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnClientExpired,
		mqtt.OnPacketRead,
	}, []byte{b})
}

// OnConnectAuthenticate allows a CONNECT only on a TLS connection with a verified
// client certificate. The MQTT username and password are ignored: the client is
// identified by the certificate's CN. The connection is also refused if its Last
// Will goes to a topic the identity may not publish to, or if its client id
// belongs to a session of another identity.
func (h *certHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	identity, err := peerIdentity(cl)
	if err != nil {
		h.log.Info("mqtt connection refused", "remote", cl.Net.Remote, "client", cl.ID, "reason", err.Error())
		return false
	}
	if pk.Connect.WillFlag && !h.acl.allowed(identity, pk.Connect.WillTopic, true) {
		h.log.Info("mqtt connection refused", "remote", cl.Net.Remote, "client", cl.ID, "identity", identity,
			"reason", "last will topic not allowed", "topic", pk.Connect.WillTopic)
		return false
	}
	if existing, ok := h.server.Clients.Get(cl.ID); ok && string(existing.Properties.Username) != identity {
		h.log.Info("mqtt connection refused", "remote", cl.Net.Remote, "client", cl.ID, "identity", identity,
			"reason", "client id belongs to another identity")
		return false
	}
	cl.Properties.Username = []byte(identity)
	return true
}

// OnACLCheck applies the topic rules to subscriptions (write false) and to the
// delivery of messages (write false, topic name). Publications (write true) are
// let through here and refused in OnPublish, so that a refused QoS 1 publish is
// acknowledged and dropped, as Mosquitto does, rather than disconnecting the client.
func (h *certHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	ok := h.acl.allowed(string(cl.Properties.Username), topic, false)
	if !ok {
		h.log.Debug("mqtt read refused", "client", cl.ID, "identity", string(cl.Properties.Username), "topic", topic)
	}
	return ok
}

// OnPublish drops a publication to a topic the client's identity may not write:
// the client gets its acknowledgement, no subscriber gets the message. A
// publish to a session being taken over waits here until the takeover is
// done (see OnSessionEstablish); once the broker is closing, publishes are
// refused unacknowledged (so resent after the restart).
func (h *certHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	allowed := cl.Net.Inline || h.acl.allowed(string(cl.Properties.Username), pk.TopicName, true)
	var to map[string]bool
	if allowed {
		to = h.subscribers(pk.TopicName)
	}
	if !h.enter(cl, to) {
		// mochi acknowledges nothing and sends nothing more: the shadowed
		// message goes back where it was (the store still has it).
		h.unshadow(cl, pk)
		return pk, packets.ErrRejectPacket
	}
	if allowed {
		return pk, nil
	}
	h.log.Info("mqtt publish refused", "client", cl.ID, "identity", string(cl.Properties.Username), "topic", pk.TopicName)
	return pk, packets.CodeSuccessIgnore
}

// subscribers returns the client ids with a subscription, shared or not,
// that matches topic.
func (h *certHook) subscribers(topic string) map[string]bool {
	subs := h.server.Topics.Subscribers(topic)
	ids := make(map[string]bool, len(subs.Subscriptions))
	for id := range subs.Subscriptions {
		ids[id] = true
	}
	for _, group := range subs.Shared {
		for id := range group {
			ids[id] = true
		}
	}
	return ids
}

// OnPublished is called once a publish was handed to the subscribers (or
// acknowledged and dropped); it puts back the message queued for cl that
// the publish's packet id shadowed (see OnPacketRead).
func (h *certHook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	if pubs := h.active[cl]; len(pubs) > 1 {
		h.active[cl] = pubs[1:]
	} else {
		delete(h.active, cl)
	}
	h.cond.Broadcast()
	h.mu.Unlock()
	h.unshadow(cl, pk)
}

// OnPacketRead keeps a copy of the message queued for cl (a QoS 1 or 2
// PUBLISH sent or to be sent to it) whose packet id cl's incoming QoS 1 or
// 2 PUBLISH pk reuses. mochi v2.7.9 keeps both directions' packet ids in
// one map (Inflight) and, taking the client's publish for a resend of one
// it acknowledged, deletes the queued message from the session
// (processPublish, server.go:894, [MQTT-4.3.2-5]); but the client and the
// server number their messages independently (MQTT 3.1.1 §2.3.1), and
// Mosquitto keeps them apart. OnPublished (or OnPublish, when the publish
// is refused) puts the copy back. A client's packets are read and processed
// one at a time, by its read loop, so the copy is of the publish mochi
// processes next.
func (h *certHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 || cl.Net.Inline ||
		!mqtt.IsValidFilter(pk.TopicName, true) { // else processPublish drops it first
		return pk, nil
	}
	// Under mu, so that a takeover (takeQueued) either took the message
	// out first or waits until it is put back.
	h.mu.Lock()
	defer h.mu.Unlock()
	queued, ok := cl.State.Inflight.Get(pk.PacketID)
	if !ok || queued.FixedHeader.Type != packets.Publish {
		// Nothing, or the acknowledgement of an incoming QoS 2 exchange
		// (mochi handles a reused id of those itself). A copy kept for an
		// earlier publish that mochi did not process to OnPublish is
		// forgotten.
		if _, ok := h.shadowed[cl]; ok {
			delete(h.shadowed, cl)
			h.cond.Broadcast()
		}
		return pk, nil
	}
	rank, _ := h.order.lookup(cl.ID, queued.PacketID)
	h.shadowed[cl] = shadowed{pk: queued, rank: rank}
	return pk, nil
}

// unshadow puts the message queued for cl that the packet id of cl's
// publish pk shadowed (OnPacketRead) back in cl's session, once mochi
// deleted it. When mochi acknowledged the publish, it also overwrote the
// stored message with the acknowledgement and then deleted it (QoS 1; and
// the hook forgot the message's rank), or holds the acknowledgement under
// that id until the exchange completes (QoS 2); when it refused it (the
// broker is closing), the store was not touched. Either way the message is
// put back and stored again, with its rank, under its id if that is still
// free, else under a new one, under which it is sent again.
func (h *certHook) unshadow(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	sh, ok := h.shadowed[cl]
	h.mu.Unlock()
	if !ok {
		return
	}
	defer func() {
		h.mu.Lock()
		delete(h.shadowed, cl)
		h.cond.Broadcast()
		h.mu.Unlock()
	}()
	if sh.pk.PacketID != pk.PacketID {
		return
	}
	if cl.IsTakenOver() {
		// The session moved to another client object after the takeover's
		// wait for this (OnSessionEstablish) timed out, and mochi deleted
		// the message before the takeover took the queued messages out.
		h.log.Warn("mqtt: a queued message shadowed by the client's own packet id was lost in a session takeover", "client", cl.ID, "topic", sh.pk.TopicName)
		return
	}
	// mochi's NextPacketID returns the next free id after the last it gave,
	// and gives it once: taking one first keeps a publish to cl that comes
	// after from taking the shadowed id (free since mochi's delete) before
	// it is set again; the id taken is the shadowed one, or another that
	// stays unused if the shadowed one is still free. (One that took the
	// id before, and has not set it in the session yet, is not seen.)
	id, err := cl.NextPacketID()
	if err != nil {
		h.log.Error("mqtt: no packet id left for a queued message shadowed by the client's own packet id; it is dropped", "client", cl.ID, "topic", sh.pk.TopicName)
		return
	}
	if uint16(id) != sh.pk.PacketID {
		if _, taken := cl.State.Inflight.Get(sh.pk.PacketID); !taken {
			id = uint32(sh.pk.PacketID)
		}
	}
	if h.requeue(cl, sh.pk, uint16(id), sh.rank) {
		atomic.AddInt64(&h.server.Info.Inflight, 1)
	}
	if uint16(id) == sh.pk.PacketID || sh.pk.Expiry < 0 {
		// Sent already under its id, or still waiting for send quota.
		return
	}
	sh.pk.PacketID = uint16(id)
	if err := cl.WritePacket(sh.pk); err != nil {
		h.log.Debug("mqtt: resending a queued message under a new packet id failed", "client", cl.ID, "err", err)
	}
}

// requeue puts the queued message pk (taken out of, or deleted from, cl's
// session) in the session again under packet id id, with its rank, and
// stores it (the session store's key for id may hold another message, or
// none). It reports whether id was free in the session.
func (h *certHook) requeue(cl *mqtt.Client, pk packets.Packet, id uint16, rank int64) bool {
	pk.PacketID = id
	added := cl.State.Inflight.Set(pk)
	h.order.restored(cl.ID, id, rank)
	if h.requeued != nil {
		h.requeued(cl, pk, rank)
	}
	return added
}

// OnDisconnect forgets a publish of cl that mochi never handed over (it
// could not write the acknowledgement, so the publisher resends it), and
// the copy OnPacketRead kept for it (see ARCHITECTURE.md: the message it
// shadowed is lost, as before).
func (h *certHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, shadowing := h.shadowed[cl]
	delete(h.shadowed, cl)
	if _, ok := h.active[cl]; ok || shadowing {
		delete(h.active, cl)
		h.cond.Broadcast()
	}
}

// enter waits while a session that the publish of cl goes to (the client
// ids to) is being taken over, and counts the publish as active; it returns
// false once the broker is closing.
func (h *certHook) enter(cl *mqtt.Client, to map[string]bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.takingOver(to) && !h.closing {
		h.cond.Wait()
	}
	if h.closing {
		return false
	}
	h.active[cl] = append(h.active[cl], to)
	return true
}

// takingOver reports whether one of the client ids to is being taken over.
// Call with h.mu held.
func (h *certHook) takingOver(to map[string]bool) bool {
	for _, t := range h.takeovers {
		if t.holding && to[t.id] {
			return true
		}
	}
	return false
}

// OnSessionEstablish is called just before mochi inherits the session of an
// existing client object with the same client id (see certHook). For a
// connection that resumes a session (clean session off), it holds new
// publishes to that client id back, waits for those to it being handed over
// to the subscribers (other than the replaced connection's own: mochi closes
// that connection during the takeover), so that every publish reaches either
// the old object before its session is copied or the new one, and for a
// message of the session that the replaced connection's own publish shadows
// to be put back (OnPacketRead), and takes the
// messages queued in the session out of the old object, in the order they
// were queued: mochi then copies nothing of them, and OnSessionEstablished
// resends them. Publishes to other sessions go on meanwhile.
func (h *certHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if pk.Connect.Clean {
		return // nothing is inherited: what the old session held is discarded
	}
	existing, ok := h.server.Clients.Get(cl.ID)
	if !ok || existing == cl || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) {
		// Nothing to take over, or a clean session that mochi discards
		// (inheritClientSession, server.go:565).
		return
	}
	deadline := time.Now().Add(takeoverWait)
	wake := time.AfterFunc(takeoverWait, func() {
		h.mu.Lock()
		h.cond.Broadcast()
		h.mu.Unlock()
	})
	defer wake.Stop()
	h.mu.Lock()
	t := &takeover{id: cl.ID, holding: true}
	h.takeovers[cl] = t
	waiting := func() bool {
		_, shadowing := h.shadowed[existing]
		return h.busy(cl.ID, existing) || shadowing
	}
	for waiting() && time.Now().Before(deadline) {
		h.cond.Wait()
	}
	stuck := waiting()
	if prev, ok := h.takeovers[existing]; ok {
		// The replaced object took the session over itself and its
		// connection is gone before it was resent the queued messages:
		// they are in its session again before this takeover takes them.
		h.adoptLocked(existing, prev)
	}
	t.queued, t.ranks = h.takeQueued(existing)
	h.mu.Unlock()
	if stuck {
		h.log.Warn("mqtt session takeover: publishes to the session still being handed over after the wait; going on", "client", cl.ID, "waited", takeoverWait)
	}
	go h.releaseAfterTakeover(cl, t, deadline.Add(takeoverWait))
}

// busy reports whether a publish to client id, by a client other than
// except, is active. Call with h.mu held.
func (h *certHook) busy(id string, except *mqtt.Client) bool {
	for cl, pubs := range h.active {
		if cl == except {
			continue
		}
		for _, to := range pubs {
			if to[id] {
				return true
			}
		}
	}
	return false
}

// takeQueued takes the messages queued for the client (QoS 1 and 2
// publishes sent or to be sent to it) out of its session and returns them in
// the order they were queued, with their ranks; the session store keeps
// them. Other in-flight state (acknowledgements of QoS 2 flows) stays for
// mochi to copy.
func (h *certHook) takeQueued(cl *mqtt.Client) ([]packets.Packet, []int64) {
	var queued []packets.Packet
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if pk.FixedHeader.Type == packets.Publish && cl.State.Inflight.Delete(pk.PacketID) {
			queued = append(queued, pk)
		}
	}
	return queued, h.order.sort(cl.ID, queued)
}

// adoptLocked puts the queued messages of takeover t in the session of cl,
// the client object that took the session over, once. A message that mochi
// queued for cl meanwhile without the hook holding it back (a Last Will,
// which mochi publishes without OnPublish) may have taken the packet id of
// one of them, in the session and in the store: that one is given a new id
// and stored again. Call with h.mu held.
func (h *certHook) adoptLocked(cl *mqtt.Client, t *takeover) {
	if t.adopted {
		return
	}
	t.adopted = true
	var taken []int
	for i := range t.queued {
		t.queued[i].FixedHeader.Dup = true // [MQTT-3.3.1-1]
		if _, ok := cl.State.Inflight.Get(t.queued[i].PacketID); ok {
			taken = append(taken, i)
			continue
		}
		cl.State.Inflight.Set(t.queued[i])
	}
	for _, i := range taken {
		pk := t.queued[i]
		id, err := cl.NextPacketID()
		if err != nil {
			h.log.Error("mqtt session takeover: no packet id left for a queued message; it is dropped", "client", cl.ID, "topic", pk.TopicName)
			t.queued[i].PacketID = 0
			continue
		}
		pk.PacketID = uint16(id)
		t.queued[i] = pk
		h.requeue(cl, pk, pk.PacketID, t.ranks[i])
	}
}

// OnSessionEstablished is called once mochi registered the client object
// and sent its CONNACK, before it reads from the connection. For a resumed
// session, it puts the messages queued in the session back and resends them
// in the order they were queued, then releases the publishes held back
// since the takeover began, which go out after them.
func (h *certHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	t, ok := h.takeovers[cl]
	if ok {
		h.adoptLocked(cl, t)
	}
	h.mu.Unlock()
	if !ok {
		return
	}
	for _, pk := range t.queued {
		if pk.PacketID == 0 {
			continue // dropped by adoptLocked
		}
		if err := cl.WritePacket(pk); err != nil {
			// As mochi does when its resend fails: the connection ends,
			// the messages stay queued for the next one.
			h.log.Debug("mqtt session takeover: resending the queued messages failed", "client", cl.ID, "err", err)
			cl.Stop(err)
			break
		}
	}
	h.mu.Lock()
	t.resent = true
	h.cond.Broadcast()
	h.mu.Unlock()
}

// releaseAfterTakeover releases the publishes held back by takeover t once
// the queued messages were resent to cl or cl is closed (its connection
// failed before: the messages go back in its session), or at the deadline;
// then forgets t once cl is set up or closed.
func (h *certHook) releaseAfterTakeover(cl *mqtt.Client, t *takeover, deadline time.Time) {
	over := func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return t.resent || cl.Closed()
	}
	for !over() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Microsecond)
	}
	h.mu.Lock()
	if !t.resent && !cl.Closed() {
		h.log.Warn("mqtt session takeover: the new connection was not set up in time; releasing publishes", "client", cl.ID)
	}
	if !t.resent {
		h.adoptLocked(cl, t)
	}
	t.holding = false
	h.cond.Broadcast()
	h.mu.Unlock()
	for !over() {
		time.Sleep(10 * time.Millisecond)
	}
	h.mu.Lock()
	delete(h.takeovers, cl)
	h.mu.Unlock()
}

// OnQosPublish records the order in which messages are queued for a client.
func (h *certHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type == packets.Publish {
		h.order.queued(cl.ID, pk.PacketID, pk.FixedHeader.Dup)
	}
}

// OnQosComplete forgets an acknowledged message.
func (h *certHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.order.done(cl.ID, pk.PacketID)
}

// OnQosDropped forgets a dropped message, unless cl was taken over by a
// connection that inherited its session (see sessionStore.OnQosDropped).
func (h *certHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if !cl.IsTakenOver() {
		h.order.done(cl.ID, pk.PacketID)
	}
}

// OnClientExpired forgets an expired session's messages.
func (h *certHook) OnClientExpired(cl *mqtt.Client) {
	h.order.forget(cl.ID)
}

// drain stops taking publishes and waits, up to timeout, for those being
// handed over to the subscribers.
func (h *certHook) drain(timeout time.Duration) {
	wake := time.AfterFunc(timeout, func() {
		h.mu.Lock()
		h.cond.Broadcast()
		h.mu.Unlock()
	})
	defer wake.Stop()
	deadline := time.Now().Add(timeout)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing = true
	h.cond.Broadcast()
	for len(h.active) > 0 && time.Now().Before(deadline) {
		h.cond.Wait()
	}
}

// peerIdentity returns the CN of the verified client certificate of cl's connection.
func peerIdentity(cl *mqtt.Client) (string, error) {
	conn, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return "", errors.New("not a TLS connection")
	}
	st := conn.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return "", errors.New("no verified client certificate")
	}
	cn := st.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", errors.New("client certificate has no CN")
	}
	return cn, nil
}
