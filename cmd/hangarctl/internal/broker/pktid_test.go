package broker_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker/brokertest"
)

// TestOwnPacketIDKeepsQueuedMessage is a gateway whose own QoS 1 or 2
// publish (a heartbeat) has the packet id of a run queued for it and not
// yet acknowledged: the client and the server number their messages
// independently (MQTT 3.1.1 §2.3.1), so the run stays queued and is
// delivered again when the gateway comes back, after a broker restart too.
// mochi v2.7.9 deleted the run from the session (and, with the store, from
// the store) as it took the publish for a resend of one it acknowledged
// (processPublish, server.go:894).
func TestOwnPacketIDKeepsQueuedMessage(t *testing.T) {
	for _, tt := range targets {
		for _, restart := range []bool{false, true} {
			if restart && !tt.restarts {
				continue // its sessions do not survive a restart
			}
			for _, qos := range []byte{1, 2} {
				name := fmt.Sprintf("%s/qos%d", tt.name, qos)
				if restart {
					name += "/restart"
				}
				t.Run(name, func(t *testing.T) {
					tg := tt.start(t)
					const id = "gateway-session"
					gw := dialRaw(t, tg, "pool-a", id)
					gw.subscribe(t, runsOf("pool-a"))
					ctl := tg.dial(t, cp, brokertest.ClientOptions{})
					ctl.Publish(t, runsOf("pool-a"), "run-1")
					run := gw.next(t, packets.Publish)
					if run.payload != "run-1" {
						t.Fatalf("got %q, want run-1", run.payload)
					}
					// Not acknowledged. The gateway's heartbeat reuses the
					// run's packet id.
					gw.publish(t, heartbeatsOf("pool-a"), "beat", qos, run.id)
					if qos == 2 {
						gw.next(t, packets.Pubrec)
						gw.send(t, packets.Pubrel, 2, run.id) // PUBREL flags 0b0010
						gw.next(t, packets.Pubcomp)
					} else {
						gw.next(t, packets.Puback)
					}
					gw.disconnect(t)
					if restart {
						tg.restart(t)
					}
					gw = dialRaw(t, tg, "pool-a", id)
					again, err := gw.read()
					if err != nil {
						t.Fatalf("after reconnecting, the unacknowledged run is not delivered again: %v", err)
					}
					if again.typ != packets.Publish || again.payload != "run-1" {
						t.Fatalf("after reconnecting got %q, want run-1 again", again.payload)
					}
				})
			}
		}
	}
}

// rawClient is an MQTT 3.1.1 client that acknowledges nothing by itself and
// chooses its packet ids.
type rawClient struct {
	conn *tls.Conn
	r    *bufio.Reader
}

// rawPacket is a packet rawClient read.
type rawPacket struct {
	typ     byte
	id      uint16
	topic   string
	payload string
}

// dialRaw connects as cn with client id id and a persistent session.
func dialRaw(t *testing.T, tg *target, cn, id string) *rawClient {
	t.Helper()
	conn, err := tls.Dial("tcp", tg.addr, tg.pki.ClientTLS(t, tg.pki, cn))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawClient{conn: conn, r: bufio.NewReader(conn)}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: id,
			Keepalive:        30,
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatalf("encode CONNECT: %v", err)
	}
	c.write(t, buf.Bytes())
	if p, err := c.read(); err != nil || p.typ != packets.Connack {
		t.Fatalf("no CONNACK (packet type %d): %v", p.typ, err)
	}
	return c
}

func (c *rawClient) write(t *testing.T, b []byte) {
	t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(wait))
	if _, err := c.conn.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// read reads the next packet.
func (c *rawClient) read() (rawPacket, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	h, err := c.r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, err := binary.ReadUvarint(c.r) // MQTT's remaining length is a uvarint
	if err != nil {
		return rawPacket{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return rawPacket{}, err
	}
	p := rawPacket{typ: h >> 4}
	switch p.typ {
	case packets.Publish:
		l := int(binary.BigEndian.Uint16(body))
		p.topic, body = string(body[2:2+l]), body[2+l:]
		if (h>>1)&3 > 0 {
			p.id, body = binary.BigEndian.Uint16(body), body[2:]
		}
		p.payload = string(body)
	case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp, packets.Suback:
		p.id = binary.BigEndian.Uint16(body)
	}
	return p, nil
}

// next reads packets up to the first of type typ.
func (c *rawClient) next(t *testing.T, typ byte) rawPacket {
	t.Helper()
	for {
		p, err := c.read()
		if err != nil {
			t.Fatalf("waiting for a packet of type %d: %v", typ, err)
		}
		if p.typ == typ {
			return p
		}
	}
}

// send writes a packet made of a packet id only (PUBACK, PUBREL...).
func (c *rawClient) send(t *testing.T, typ, flags byte, id uint16) {
	t.Helper()
	c.write(t, []byte{typ<<4 | flags, 2, byte(id >> 8), byte(id)})
}

func (c *rawClient) subscribe(t *testing.T, filter string) {
	t.Helper()
	b := []byte{packets.Subscribe<<4 | 2, byte(2 + 2 + len(filter) + 1), 0, 1, 0, byte(len(filter))}
	b = append(append(b, filter...), 1)
	c.write(t, b)
	if p := c.next(t, packets.Suback); p.id != 1 {
		t.Fatalf("SUBACK for packet id %d, want 1", p.id)
	}
}

func (c *rawClient) publish(t *testing.T, topic, payload string, qos byte, id uint16) {
	t.Helper()
	body := append([]byte{0, byte(len(topic))}, topic...)
	body = append(body, byte(id>>8), byte(id))
	body = append(body, payload...)
	c.write(t, append([]byte{packets.Publish<<4 | qos<<1, byte(len(body))}, body...))
}

func (c *rawClient) disconnect(t *testing.T) {
	t.Helper()
	c.write(t, []byte{packets.Disconnect << 4, 0})
	_ = c.conn.Close()
}
