package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// certHook authenticates clients by their verified TLS client certificate and
// applies the topic rules of acl. It keeps the identity (the certificate CN) in
// the client's username, as Mosquitto's use_identity_as_username does, so that
// it is persisted with the session and restored after a restart.
type certHook struct {
	mqtt.HookBase
	acl    acl
	server *mqtt.Server
	log    *slog.Logger

	// mochi acknowledges a QoS 1 publish before it hands the message to the
	// subscribers (and to the session store). On shutdown the broker stops
	// taking publishes (closing: no PUBACK, so publishers resend after the
	// restart) and waits for the ones being handed over (active) before the
	// store closes, so that no acknowledged message is lost.
	closing atomic.Bool
	active  atomic.Int64
}

// ID returns the id of the hook.
func (h *certHook) ID() string { return "hangar-cert-acl" }

// Provides reports which hook methods certHook implements.
func (h *certHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPublished}, []byte{b})
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
// the client gets its acknowledgement, no subscriber gets the message.
func (h *certHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.active.Add(1)
	if h.closing.Load() {
		h.active.Add(-1)
		return pk, packets.ErrRejectPacket // not acknowledged: resent after the restart
	}
	if cl.Net.Inline || h.acl.allowed(string(cl.Properties.Username), pk.TopicName, true) {
		return pk, nil
	}
	h.log.Info("mqtt publish refused", "client", cl.ID, "identity", string(cl.Properties.Username), "topic", pk.TopicName)
	return pk, packets.CodeSuccessIgnore
}

// OnPublished is called once a publish was handed to the subscribers.
func (h *certHook) OnPublished(*mqtt.Client, packets.Packet) { h.active.Add(-1) }

// drain stops taking publishes and waits, up to timeout, for those being
// handed over to the subscribers.
func (h *certHook) drain(timeout time.Duration) {
	h.closing.Store(true)
	deadline := time.Now().Add(timeout)
	for h.active.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
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
