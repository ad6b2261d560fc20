package link

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func TestSessionNames(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	c1, g1 := SessionNames(k1, "pool-a", "gw-1")
	c1b, g1b := SessionNames(k1, "pool-a", "gw-1")
	c2, g2 := SessionNames(k1, "pool-a", "gw-2")
	c3, g3 := SessionNames(k2, "pool-a", "gw-1")
	if c1 != c1b || g1 != g1b {
		t.Fatal("names are not stable")
	}
	if c1 == c2 || g1 != g2 {
		t.Fatalf("two gateways of a pool: client ids %q %q (want different), groups %q %q (want equal)", c1, c2, g1, g2)
	}
	if c1 == c3 || g1 == g3 {
		t.Fatal("another key gives the same names")
	}
	for _, n := range []string{c1, g1} {
		if strings.Contains(n, "pool-a") || strings.ContainsAny(n, "/+#") || len(n) > 64 {
			t.Fatalf("name %q", n)
		}
	}
}

// publish encodes an MQTT PUBLISH.
func publish(qos byte, topic string, id uint16, payload []byte) []byte {
	var body []byte
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	body = append(body, payload...)
	out := []byte{0x30 | qos<<1}
	out = appendVarint(out, len(body))
	return append(out, body...)
}

type pipeConn struct {
	net.Conn
	r io.Reader
}

func (p pipeConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func TestPacketLimiter(t *testing.T) {
	marker := []byte(markerTag + "0123456789abcdef")
	big := bytes.Repeat([]byte("x"), 5000)
	small := publish(1, "hangar/pools/p/runs", 7, []byte("run"))
	ping := []byte{0xd0, 0x00}
	stream := append(append(append([]byte(nil), small...), publish(1, "hangar/pools/p/runs", 8, big)...), ping...)
	l := newPacketLimiter(pipeConn{r: bytes.NewReader(stream)}, 1024, marker)
	var got bytes.Buffer
	buf := make([]byte, 3) // small reads: framing must hold across them
	for {
		n, err := l.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	sum := sha256.Sum256(big)
	var want []byte
	want = append(want, small...)
	mk := append(append([]byte(nil), marker...), 0, 0, 0, 0, 0, 0, 0x13, 0x88)
	mk = append(mk, sum[:]...)
	want = append(want, publish(1, "hangar/pools/p/runs", 8, mk)...)
	want = append(want, ping...)
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("stream:\n got %q\nwant %q", got.Bytes(), want)
	}
	o, ok := parseOversize(mk, marker)
	if !ok || o.Size != 5000 || o.SHA256 != sum {
		t.Fatalf("parseOversize = %+v %v", o, ok)
	}
	if _, ok := parseOversize(mk, []byte(markerTag+"another-nonce!!!")); ok {
		t.Fatal("a marker of another link was accepted")
	}

	// Any other packet above the limit ends the connection.
	sub := append([]byte{0x82}, appendVarint(nil, 2000)...)
	l = newPacketLimiter(pipeConn{r: bytes.NewReader(append(sub, make([]byte, 2000)...))}, 1024, marker)
	if _, err := l.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "above the limit") {
		t.Fatalf("oversize SUBSCRIBE: %v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err       error
		permanent bool
	}{
		{x509.UnknownAuthorityError{}, true},
		{x509.CertificateInvalidError{Reason: x509.Expired}, true},
		{x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}, true},
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true},
		{errors.New("remote error: tls: expired certificate"), true},
		{errors.New("remote error: tls: bad certificate"), true},
		{errors.New("remote error: tls: unknown certificate authority"), true},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
		{io.EOF, false},
		{nil, false},
	} {
		err := classify(tc.err)
		if (err != nil) != tc.permanent || (err != nil && !errors.Is(err, ErrPermanent)) {
			t.Errorf("classify(%v) = %v, want permanent %v", tc.err, err, tc.permanent)
		}
	}
}
