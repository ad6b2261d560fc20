package link

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// packetLimiter sits under the MQTT client, on the connection's read side,
// so that no incoming packet larger than the limit is ever held in memory.
// Packets up to the limit pass through unchanged. A PUBLISH above it is read
// through a SHA-256 and thrown away as it streams, and the client gets in its
// place a small PUBLISH with the same flags, topic and packet id whose payload
// is an oversize marker (see Oversize): the gateway acknowledges it and
// reports the envelope as oversize, so the broker does not redeliver it and
// the session goes on. Any other packet above the limit ends the connection.
type packetLimiter struct {
	net.Conn
	src    *bufio.Reader
	limit  int
	marker []byte // prefix of oversize payloads: markerTag and this link's nonce

	out  bytes.Buffer // bytes to hand to the client before reading on
	left int          // bytes of the current packet still to pass through
}

// PacketOverhead is what an MQTT packet adds to its payload at most in
// Hangar (fixed header, topic, packet id), with a wide margin: the link's
// packet limit is the largest accepted envelope plus this.
const PacketOverhead = 16 << 10

// markerTag starts an oversize marker; the link's random nonce follows, so
// that no payload from the broker can pass for one.
const markerTag = "\x00hangar-oversize\x00"

func newPacketLimiter(c net.Conn, limit int, marker []byte) *packetLimiter {
	return &packetLimiter{Conn: c, src: bufio.NewReaderSize(c, 32<<10), limit: limit, marker: marker}
}

// Read hands the client the (possibly rewritten) packet stream.
func (p *packetLimiter) Read(b []byte) (int, error) {
	if p.out.Len() > 0 {
		return p.out.Read(b)
	}
	if p.left > 0 {
		if len(b) > p.left {
			b = b[:p.left]
		}
		n, err := p.src.Read(b)
		p.left -= n
		return n, err
	}
	if err := p.next(); err != nil {
		return 0, err
	}
	return p.out.Read(b)
}

// next reads the next fixed header and prepares what the client gets of the
// packet.
func (p *packetLimiter) next() error {
	first, err := p.src.ReadByte()
	if err != nil {
		return err
	}
	remaining, lenBytes, err := readVarint(p.src)
	if err != nil {
		return err
	}
	if remaining <= p.limit {
		p.out.WriteByte(first)
		p.out.Write(lenBytes)
		p.left = remaining
		return nil
	}
	if first>>4 != 3 { // not a PUBLISH
		return fmt.Errorf("mqtt packet of type %d is %d bytes, above the limit of %d", first>>4, remaining, p.limit)
	}
	// Variable header: topic (length-prefixed), then a packet id for QoS > 0.
	var head bytes.Buffer
	var tl [2]byte
	if _, err := io.ReadFull(p.src, tl[:]); err != nil {
		return err
	}
	topicLen := int(binary.BigEndian.Uint16(tl[:]))
	head.Write(tl[:])
	if _, err := io.CopyN(&head, p.src, int64(topicLen)); err != nil {
		return err
	}
	if qos := (first >> 1) & 3; qos > 0 {
		if _, err := io.CopyN(&head, p.src, 2); err != nil {
			return err
		}
	}
	payloadLen := remaining - head.Len()
	if payloadLen < 0 {
		return errors.New("malformed mqtt publish: variable header longer than the packet")
	}
	sum := sha256.New()
	if _, err := io.CopyN(sum, p.src, int64(payloadLen)); err != nil {
		return err
	}
	payload := append(append([]byte(nil), p.marker...), make([]byte, 8)...)
	binary.BigEndian.PutUint64(payload[len(p.marker):], uint64(payloadLen))
	payload = sum.Sum(payload)
	p.out.WriteByte(first)
	p.out.Write(appendVarint(nil, head.Len()+len(payload)))
	p.out.Write(head.Bytes())
	p.out.Write(payload)
	return nil
}

// Oversize describes a publication the link refused to hold in memory.
type Oversize struct {
	// Size is the payload's length in bytes.
	Size int64
	// SHA256 is the digest of the payload.
	SHA256 [32]byte
}

// parseOversize returns the Oversize a marker payload stands for.
func parseOversize(payload, marker []byte) (*Oversize, bool) {
	rest, ok := bytes.CutPrefix(payload, marker)
	if !ok || len(rest) != 8+sha256.Size {
		return nil, false
	}
	o := &Oversize{Size: int64(binary.BigEndian.Uint64(rest[:8]))}
	copy(o.SHA256[:], rest[8:])
	return o, true
}

// readVarint reads an MQTT remaining length (1-4 bytes) and returns it with
// its encoding.
func readVarint(r io.ByteReader) (int, []byte, error) {
	var v, mult int
	mult = 1
	enc := make([]byte, 0, 4)
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		enc = append(enc, b)
		v += int(b&127) * mult
		if b&128 == 0 {
			return v, enc, nil
		}
		mult *= 128
	}
	return 0, nil, errors.New("malformed mqtt remaining length")
}

func appendVarint(b []byte, v int) []byte {
	for {
		d := byte(v % 128)
		v /= 128
		if v > 0 {
			d |= 128
		}
		b = append(b, d)
		if v == 0 {
			return b
		}
	}
}
