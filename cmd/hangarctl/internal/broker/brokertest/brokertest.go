// Package brokertest holds test helpers for Hangar's MQTT brokers: a throw-away
// certificate authority with a server certificate for 127.0.0.1 and client
// certificates for given CNs, and a paho MQTT 3.1.1 client that records what it
// receives and can drop its connection uncleanly.
package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// PKI is a test certificate authority with a server certificate (CN "broker",
// SANs 127.0.0.1 and localhost), all written as PEM files in Dir.
type PKI struct {
	// Dir holds the PEM files.
	Dir string
	// CAFile, CertFile and KeyFile are the CA certificate and the server's
	// certificate and key.
	CAFile, CertFile, KeyFile string

	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

// NewPKI makes a CA named name and a server certificate in a temporary directory.
func NewPKI(t testing.TB, name string) *PKI {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse CA certificate: %v", err)
	}
	p := &PKI{Dir: t.TempDir(), ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.CAFile = filepath.Join(p.Dir, "ca.pem")
	writePEM(t, p.CAFile, "CERTIFICATE", der)

	serverTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "broker"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	p.server = p.issue(t, serverTmpl)
	p.CertFile = filepath.Join(p.Dir, "server.pem")
	p.KeyFile = filepath.Join(p.Dir, "server-key.pem")
	writePEM(t, p.CertFile, "CERTIFICATE", p.server.Certificate[0])
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.server.PrivateKey)
	if err != nil {
		t.Fatalf("marshal server key: %v", err)
	}
	writePEM(t, p.KeyFile, "PRIVATE KEY", keyDER)
	return p
}

// ServerTLS returns a listener configuration that requires and verifies client
// certificates from this CA.
func (p *PKI) ServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientCert issues a client certificate with common name cn.
func (p *PKI) ClientCert(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	return p.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// ClientTLS returns a client configuration that trusts this CA and presents a
// certificate for cn issued by issuer (nil: no client certificate).
func (p *PKI) ClientTLS(t testing.TB, issuer *PKI, cn string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	if issuer != nil {
		cfg.Certificates = []tls.Certificate{issuer.ClientCert(t, cn)}
	}
	return cfg
}

func (p *PKI) issue(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("issue certificate for %s: %v", tmpl.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("serial number: %v", err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// servers that cannot listen on port 0 and report the port (Mosquitto).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Message is a message a Client received.
type Message struct {
	Topic   string
	Payload string
}

// Will is a Last Will.
type Will struct {
	Topic   string
	Payload string
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// ID is the MQTT client id.
	ID string
	// Persistent asks for a persistent session (CleanSession false).
	Persistent bool
	// Username is sent in CONNECT (brokers identify clients by certificate).
	Username string
	// Will, if set, is the Last Will, published QoS 1.
	Will *Will
}

// Client is a connected paho MQTT 3.1.1 client. Every message it receives, on
// any subscription or queued in its session, goes to Messages.
type Client struct {
	paho.Client
	// Messages receives what the client receives.
	Messages chan Message

	mu   sync.Mutex
	conn net.Conn
}

// Dial connects to the broker at addr (host:port) over TLS with cfg.
func Dial(addr string, cfg *tls.Config, o ClientOptions) (*Client, error) {
	c := &Client{Messages: make(chan Message, 100)}
	opts := paho.NewClientOptions().
		AddBroker("ssl://" + addr).
		SetClientID(o.ID).
		SetProtocolVersion(4).
		SetCleanSession(!o.Persistent).
		SetTLSConfig(cfg).
		SetUsername(o.Username).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			c.Messages <- Message{Topic: m.Topic(), Payload: string(m.Payload())}
		}).
		SetCustomOpenConnectionFn(func(uri *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
			conn, err := d.Dial("tcp", uri.Host)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.conn = conn
			c.mu.Unlock()
			return conn, nil
		})
	if o.Will != nil {
		opts.SetWill(o.Will.Topic, o.Will.Payload, 1, false)
	}
	c.Client = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect to %s: timed out", addr)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return c, nil
}

// MustDial is Dial that fails t on error and disconnects at the end of the test.
func MustDial(t testing.TB, addr string, cfg *tls.Config, o ClientOptions) *Client {
	t.Helper()
	c, err := Dial(addr, cfg, o)
	if err != nil {
		t.Fatalf("client %s: %v", o.ID, err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// Subscribe subscribes at QoS 1 and returns the broker's return code for filter
// (0x80: refused).
func (c *Client) Subscribe(t testing.TB, filter string) byte {
	t.Helper()
	tok := c.Client.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribe %s: timed out", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	// paho keys the result by the filter without a $share/{group}/ prefix.
	res := tok.(*paho.SubscribeToken).Result()
	if len(res) != 1 {
		t.Fatalf("subscribe %s: %d results, want 1", filter, len(res))
	}
	for _, rc := range res {
		return rc
	}
	return 0
}

// Publish publishes at QoS 1 and waits for the broker's acknowledgement.
func (c *Client) Publish(t testing.TB, topic, payload string) {
	t.Helper()
	tok := c.Client.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("publish to %s: timed out", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
}

// DropConnection closes the network connection under the client without an
// MQTT DISCONNECT, as a crashed process would.
func (c *Client) DropConnection() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// Expect waits up to timeout for a message on topic and fails t if another
// message comes first or none comes.
func (c *Client) Expect(t testing.TB, topic, payload string, timeout time.Duration) {
	t.Helper()
	select {
	case m := <-c.Messages:
		if m.Topic != topic || m.Payload != payload {
			t.Fatalf("received %q on %s, want %q on %s", m.Payload, m.Topic, payload, topic)
		}
	case <-time.After(timeout):
		t.Fatalf("no message on %s within %v", topic, timeout)
	}
}

// ExpectNone fails t if a message arrives within wait.
func (c *Client) ExpectNone(t testing.TB, wait time.Duration) {
	t.Helper()
	select {
	case m := <-c.Messages:
		t.Fatalf("unexpected message %q on %s", m.Payload, m.Topic)
	case <-time.After(wait):
	}
}
