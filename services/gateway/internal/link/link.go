// Package link holds the gateway's MQTT session with the control plane's broker:
// MQTT 3.1.1 over mutual TLS, a persistent session (clean session off) so runs
// published while the gateway is away are delivered when it returns, QoS 1 both
// ways, a Last Will, and reconnection with capped exponential backoff.
package link

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
)

// Message is one received publication. The handler must call Ack once it has
// taken responsibility for the message (recorded it durably); until then the
// broker redelivers it after a reconnect.
type Message struct {
	Topic   string
	Payload []byte
	// Oversize is set, and Payload empty, for a publication larger than
	// Config.MaxPacketBytes: the link read it through a digest without
	// keeping it (see packetLimiter).
	Oversize *Oversize
	Ack      func()
}

// Config describes the session.
type Config struct {
	// Broker is "mqtts://host:port".
	Broker string
	// ClientID identifies the session at the broker; it must be stable across
	// restarts for the persistent session to resume.
	ClientID string
	TLS      *tls.Config
	// Subscriptions are the topics to subscribe to (QoS 1) on every connect.
	Subscriptions []string
	// WillTopic and WillPayload form the Last Will (QoS 1, not retained).
	WillTopic   string
	WillPayload []byte
	// MaxPacketBytes bounds every packet the link receives (0: no bound). A
	// larger PUBLISH is never held in memory: it arrives as a Message with
	// Oversize set.
	MaxPacketBytes int
	// KeepAlive defaults to 30s; MaxReconnectInterval to 30s.
	KeepAlive            time.Duration
	MaxReconnectInterval time.Duration
	Logger               *slog.Logger
	Registry             prometheus.Registerer
}

// Link is a live MQTT session.
type Link struct {
	client    mqtt.Client
	log       *slog.Logger
	connected atomic.Bool
	up        prometheus.Gauge
	reconns   prometheus.Counter

	fatalOnce sync.Once
	fatal     chan struct{}
	fatalErr  error
}

// fail records a permanent error; the first one wins.
func (l *Link) fail(err error) {
	l.fatalOnce.Do(func() {
		l.fatalErr = err
		l.log.Error("broker connection failed for good; not retrying", "err", err)
		close(l.fatal)
	})
}

// Fatal is closed once the link met a permanent error (see ErrPermanent);
// Err then returns it. The gateway stops: retrying cannot help.
func (l *Link) Fatal() <-chan struct{} { return l.fatal }

// Err returns the permanent error, once Fatal is closed.
func (l *Link) Err() error {
	select {
	case <-l.fatal:
		return l.fatalErr
	default:
		return nil
	}
}

// Dial connects to the broker and subscribes, calling handle for every message
// (from several goroutines). It returns after the first successful connection,
// or with an error when ctx ends first; after that the session reconnects by
// itself.
func Dial(ctx context.Context, cfg Config, handle func(Message)) (*Link, error) {
	u, err := url.Parse(cfg.Broker)
	if err != nil || u.Scheme != "mqtts" || u.Host == "" {
		return nil, fmt.Errorf("link: broker address %q is not mqtts://host:port", cfg.Broker)
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.MaxReconnectInterval == 0 {
		cfg.MaxReconnectInterval = 30 * time.Second
	}
	l := &Link{
		log: cfg.Logger, fatal: make(chan struct{}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hangar_mqtt_connected",
			Help: "1 while the gateway's MQTT session to the broker is up.",
		}),
		reconns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hangar_mqtt_reconnects_total",
			Help: "Reconnection attempts of the MQTT session after it was lost.",
		}),
	}
	cfg.Registry.MustRegister(l.up, l.reconns)

	marker := make([]byte, len(markerTag)+16)
	copy(marker, markerTag)
	if _, err := rand.Read(marker[len(markerTag):]); err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	onMessage := func(_ mqtt.Client, m mqtt.Message) {
		if o, ok := parseOversize(m.Payload(), marker); ok {
			handle(Message{Topic: m.Topic(), Oversize: o, Ack: m.Ack})
			return
		}
		handle(Message{Topic: m.Topic(), Payload: m.Payload(), Ack: m.Ack})
	}
	dial := l.dialer(cfg.TLS, cfg.MaxPacketBytes, marker)
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + u.Host).
		SetClientID(cfg.ClientID).
		SetTLSConfig(cfg.TLS).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetResumeSubs(true).
		SetOrderMatters(false).
		SetAutoAckDisabled(true).
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(cfg.MaxReconnectInterval).
		SetCustomOpenConnectionFn(func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			return dial(u, o.ConnectTimeout)
		}).
		// Queued messages of the persistent session arrive right after CONNACK,
		// before any subscription callback exists.
		SetDefaultPublishHandler(onMessage)
	if cfg.WillTopic != "" {
		opts.SetBinaryWill(cfg.WillTopic, cfg.WillPayload, 1, false)
	}
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		filters := map[string]byte{}
		for _, t := range cfg.Subscriptions {
			filters[t] = 1
		}
		tok := c.SubscribeMultiple(filters, onMessage)
		tok.Wait()
		if err := tok.Error(); err != nil {
			l.log.Error("subscribing failed", "err", err)
		}
		if st, ok := tok.(*mqtt.SubscribeToken); ok {
			for topic, code := range st.Result() {
				if code == 0x80 {
					l.log.Error("the broker refused a subscription (check the pool's ACL)", "topic", topic)
				}
			}
		}
		l.connected.Store(true)
		l.up.Set(1)
		l.log.Info("connected to broker", "broker", cfg.Broker)
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		l.connected.Store(false)
		l.up.Set(0)
		l.log.Warn("lost connection to broker, reconnecting", "err", err)
	})
	opts.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) { l.reconns.Inc() })
	opts.SetConnectionAttemptHandler(func(broker *url.URL, tc *tls.Config) *tls.Config {
		l.log.Debug("connecting to broker", "broker", broker.Host)
		return tc
	})
	opts.SetConnectionNotificationHandler(func(_ mqtt.Client, n mqtt.ConnectionNotification) {
		if f, ok := n.(mqtt.ConnectionNotificationFailed); ok {
			l.log.Warn("connecting to broker failed, retrying", "err", f.Reason)
		}
	})

	l.client = mqtt.NewClient(opts)
	tok := l.client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("link: connect to %s: %w", cfg.Broker, err)
		}
	case <-l.fatal:
		l.client.Disconnect(0)
		return nil, fmt.Errorf("link: connect to %s: %w", cfg.Broker, l.fatalErr)
	case <-ctx.Done():
		l.client.Disconnect(0)
		return nil, fmt.Errorf("link: connect to %s: %w", cfg.Broker, ctx.Err())
	}
	// The connect token completes before the on-connect handler has subscribed.
	for !l.connected.Load() {
		select {
		case <-ctx.Done():
			l.client.Disconnect(0)
			return nil, fmt.Errorf("link: subscribe: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return l, nil
}

// ErrNotConnected is returned by Publish while the session is down.
var errNotConnected = errors.New("not connected to the broker")

// Publish publishes payload with QoS 1 and waits for the broker's acknowledgement.
func (l *Link) Publish(ctx context.Context, topic string, payload []byte) error {
	if !l.connected.Load() {
		return errNotConnected
	}
	tok := l.client.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("link: publish to %s: %w", topic, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("link: publish to %s: no acknowledgement within 30s", topic)
	}
}

// Connected reports whether the session is up.
func (l *Link) Connected() bool { return l.connected.Load() }

// Close disconnects cleanly (the Last Will is not sent), waiting up to 1s for
// in-flight work.
func (l *Link) Close() {
	l.client.Disconnect(1000)
	l.connected.Store(false)
	l.up.Set(0)
}
