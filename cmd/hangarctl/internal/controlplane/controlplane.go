// Package controlplane is hangarctl's MQTT side of the wire: it connects to the
// broker with the control plane's client certificate, publishes signed run
// envelopes and commands, and reads the events and heartbeats pools publish.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/url"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Conn is a control-plane MQTT session (clean session: hangarctl is a client
// that comes and goes).
type Conn struct {
	client mqtt.Client
}

// Connect opens a session to broker ("mqtts://host:port") with tlsConf.
func Connect(ctx context.Context, broker string, tlsConf *tls.Config) (*Conn, error) {
	u, err := url.Parse(broker)
	if err != nil || u.Scheme != "mqtts" || u.Host == "" {
		return nil, fmt.Errorf("broker address %q is not mqtts://host:port", broker)
	}
	if tlsConf.ServerName == "" {
		tlsConf = tlsConf.Clone()
		tlsConf.ServerName = u.Hostname()
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + u.Host).
		SetClientID("hangarctl-" + hex.EncodeToString(id[:])).
		SetTLSConfig(tlsConf).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectTimeout(10 * time.Second).
		SetOrderMatters(true)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("connect to %s: %w", broker, err)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("connect to %s: %w", broker, ctx.Err())
	}
	return &Conn{client: c}, nil
}

// Subscribe calls handle for every message on topic (QoS 1), in order.
func (c *Conn) Subscribe(ctx context.Context, topic string, handle func(payload []byte)) error {
	tok := c.client.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { handle(m.Payload()) })
	if err := wait(ctx, tok); err != nil {
		return fmt.Errorf("subscribe to %s: %w", topic, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if code := st.Result()[topic]; code == 0x80 {
			return fmt.Errorf("subscribe to %s: refused by the broker", topic)
		}
	}
	return nil
}

// Publish publishes payload with QoS 1 and waits for the broker's acknowledgement.
func (c *Conn) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := wait(ctx, c.client.Publish(topic, 1, false, payload)); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

// Close disconnects.
func (c *Conn) Close() { c.client.Disconnect(250) }

func wait(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
