// Package broker runs Hangar's embedded MQTT broker: a mochi-mqtt server with one
// mutual-TLS listener, identities taken from verified client certificates, and the
// per-pool topic rules of hangar.event.v1:
//
//   - the control plane (certificate CN Config.ControlPlaneCN, default
//     "hangar-control-plane") may publish and subscribe to anything under hangar/;
//   - a pool (certificate CN = pool id) may subscribe only to
//     hangar/pools/{id}/runs and hangar/pools/{id}/commands, also as shared
//     subscriptions ($share/{group}/hangar/pools/{id}/runs), and publish only to
//     hangar/pools/{id}/events and hangar/pools/{id}/heartbeats; its Last Will must
//     go to one of these, or the connection is refused.
//
// A refused subscription gets the failure return code 0x80 (MQTT 3.1.1; 0x87 for
// MQTT 5). A refused publication is acknowledged and dropped, as Mosquitto does,
// so a misbehaving client is not disconnected into a resend loop. The MQTT
// username and password are ignored. A client id already used by a session of
// another identity is refused, so that a pool cannot take over another's session.
//
// The same rules, for Mosquitto, are written by package mosquitto.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Config configures the embedded broker.
type Config struct {
	// Addr is the host:port to listen on, e.g. "127.0.0.1:8883"; port 0 picks a
	// free port (see Broker.Addr).
	Addr string
	// TLS is the listener's configuration: a server certificate, and ClientAuth
	// tls.RequireAndVerifyClientCert with ClientCAs. Required.
	TLS *tls.Config
	// DataDir keeps sessions (subscriptions and queued messages) in a pebble
	// database in this directory, so they survive a restart. Empty: in memory.
	DataDir string
	// Logger receives the broker's logs; nil discards them. Mochi's per-connection
	// warnings (every disconnect, every failed handshake) are logged at Debug.
	Logger *slog.Logger
	// ControlPlaneCN is the certificate CN of the control plane; empty means
	// DefaultControlPlaneCN.
	ControlPlaneCN string
	// MaxPacketBytes is the largest MQTT packet accepted; 0 means
	// DefaultMaxPacketBytes. A client that sends a larger one is disconnected
	// as soon as its fixed header is read: the packet is never buffered.
	MaxPacketBytes int
}

// DefaultMaxPacketBytes is the default packet size limit of both brokers
// (embedded and the generated Mosquitto configuration): room for a run
// envelope well above the gateways' default HANGAR_MAX_ENVELOPE_BYTES (1 MiB),
// so that such an envelope still reaches the gateway and is reported as
// oversize, while a huge publish is refused at the door.
const DefaultMaxPacketBytes = 4 << 20

// Broker is a running embedded broker.
type Broker struct {
	server    *mqtt.Server
	hook      *certHook
	addr      string
	closeOnce sync.Once
	closeErr  error
}

// Start listens on cfg.Addr and serves MQTT over mutual TLS until Close. It
// returns once the listener accepts connections. ctx bounds only the start-up.
func Start(ctx context.Context, cfg Config) (*Broker, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	if cfg.TLS == nil {
		return nil, errors.New("start broker: a TLS configuration is required")
	}
	if cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("start broker: the TLS configuration must set ClientAuth to tls.RequireAndVerifyClientCert")
	}
	if cfg.Addr == "" {
		return nil, errors.New("start broker: no listen address")
	}
	if cfg.ControlPlaneCN == "" {
		cfg.ControlPlaneCN = DefaultControlPlaneCN
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mlog := slog.New(&quietHandler{inner: logger.Handler()}).With("component", "mqtt-broker")

	if cfg.MaxPacketBytes <= 0 {
		cfg.MaxPacketBytes = DefaultMaxPacketBytes
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MaxPacketBytes)
	server := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       mlog,
	})
	order := newQueueOrder()
	hook := newCertHook(acl{controlPlaneCN: cfg.ControlPlaneCN}, server, mlog, order)
	if err := server.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("start broker: add auth hook: %w", err)
	}
	if cfg.DataDir != "" {
		store := sessionStore{new(pebble.Hook), order}
		if err := server.AddHook(store, &pebble.Options{Path: cfg.DataDir, Mode: pebble.Sync}); err != nil {
			_ = server.Close()
			return nil, fmt.Errorf("start broker: open session store %s: %w", cfg.DataDir, err)
		}
		hook.requeued = store.requeued
	}
	tlsCfg := cfg.TLS.Clone()
	if tlsCfg.MinVersion < tls.VersionTLS12 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	l := listeners.NewTCP(listeners.Config{ID: "mqtts", Address: cfg.Addr, TLSConfig: tlsCfg})
	if err := server.AddListener(l); err != nil {
		_ = server.Close()
		return nil, fmt.Errorf("start broker: listen on %s: %w", cfg.Addr, err)
	}
	if err := server.Serve(); err != nil {
		_ = server.Close()
		return nil, fmt.Errorf("start broker: %w", err)
	}
	return &Broker{server: server, hook: hook, addr: l.Address()}, nil
}

// Addr returns the address the broker listens on, with the actual port.
func (b *Broker) Addr() string { return b.addr }

// Close disconnects every client, stops listening and closes the session store.
// Sessions of clients that asked for one are kept in the store. Close may be
// called more than once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.hook.drain(2 * time.Second)
		if err := b.server.Close(); err != nil {
			b.closeErr = fmt.Errorf("close broker: %w", err)
		}
	})
	return b.closeErr
}

// sessionStore is mochi's pebble storage hook, except that it keeps the
// stored in-flight messages of a session that another connection took over.
// mochi's inheritClientSession (server.go:562) copies the old client object's
// in-flight messages to the new object and then clears them from the old one
// (ClearInflights, server.go:592), which tells the store they were dropped;
// but the new object holds them under the same keys (client id and packet
// id), and they are stored again only as they are resent, one by one, once
// the new connection is acknowledged (ResendInflightMessages): a connection
// that is gone before that, then a restart, lost them. Dropping them also cost
// an fsync each while publishes to the session were held back (see certHook).
// A clean session's takeover clears the old messages before marking the old
// object taken over, so they are still deleted.
//
// It also keeps the order in which messages were queued in each session
// (queueOrder): a message's rank is stored as its "sent" time, which mochi
// does not read back, and read back at start-up (StoredInflightMessages), so
// that a session resumed after a restart gets its messages in order.
type sessionStore struct {
	*pebble.Hook
	order *queueOrder
}

// OnQosPublish stores a queued message with its rank (certHook, called
// first, recorded it).
func (s sessionStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if r, ok := s.order.lookup(cl.ID, pk.PacketID); ok && pk.FixedHeader.Type == packets.Publish {
		sent = r
	}
	s.Hook.OnQosPublish(cl, pk, sent, resends)
}

// requeued stores a queued message again under a new packet id (see
// certHook.adoptLocked); its old key already holds the message that took
// its id.
func (s sessionStore) requeued(cl *mqtt.Client, pk packets.Packet, rank int64) {
	s.Hook.OnQosPublish(cl, pk, rank, 0)
}

// StoredInflightMessages returns the stored queued messages and records
// their ranks.
func (s sessionStore) StoredInflightMessages() ([]storage.Message, error) {
	v, err := s.Hook.StoredInflightMessages()
	for _, m := range v {
		if m.FixedHeader.Type == packets.Publish {
			s.order.restored(m.Client, m.PacketID, m.Sent)
		}
	}
	return v, err
}

// OnQosDropped deletes the stored message unless cl was taken over by a
// connection that inherited its session.
func (s sessionStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return
	}
	s.Hook.OnQosDropped(cl, pk)
}

// quietHandler demotes mochi's per-connection warnings (a disconnect, a failed
// TLS handshake, a malformed packet: each logged at WARN) to Debug.
type quietHandler struct {
	inner slog.Handler
}

// Enabled reports whether the inner handler handles level.
func (h *quietHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle demotes the noisy records and passes the rest on.
func (h *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && (r.Message == "" || r.Message == "error processing packet") {
		r.Level = slog.LevelDebug
		if r.Message == "" {
			r.Message = "client connection ended"
		}
		if !h.inner.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns a quietHandler around the inner handler with attrs.
func (h *quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &quietHandler{inner: h.inner.WithAttrs(attrs)}
}

// WithGroup returns a quietHandler around the inner handler with a group.
func (h *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{inner: h.inner.WithGroup(name)}
}
