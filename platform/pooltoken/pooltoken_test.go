package pooltoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type fixture struct {
	caKey      *ecdsa.PrivateKey
	caCert     *x509.Certificate
	caPEM      string
	poolKey    *rsa.PrivateKey
	otherKey   *rsa.PrivateKey
	poolPEM    string
	verifyKey  ed25519.PublicKey
	serverCert tls.Certificate
}

func pemCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func issue(t testing.TB, caCert *x509.Certificate, caKey crypto.Signer, pub any, tmpl *x509.Certificate) []byte {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var fixtures = sync.OnceValue(func() *fixture {
	t := &testing.T{}
	f := &fixture{}
	var err error
	if f.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	caTmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, SerialNumber: big.NewInt(1),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &f.caKey.PublicKey, f.caKey)
	if err != nil {
		panic(err)
	}
	f.caCert, _ = x509.ParseCertificate(caDER)
	f.caPEM = pemCert(caDER)
	if f.poolKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if f.otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	f.poolPEM = pemCert(issue(t, f.caCert, f.caKey, &f.poolKey.PublicKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "pool-a"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}))
	if f.verifyKey, _, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvDER := issue(t, f.caCert, f.caKey, &srvKey.PublicKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "broker"}, DNSNames: []string{"broker.example"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	f.serverCert = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	return f
})

func goodToken(f *fixture) *Token {
	return &Token{
		Version:            1,
		Broker:             "mqtts://broker.example:8883",
		PoolID:             "pool-a",
		BrokerCAPEM:        f.caPEM,
		CertificatePEM:     f.poolPEM,
		RunVerificationKey: base64.StdEncoding.EncodeToString(f.verifyKey),
	}
}

// encodeRaw encodes any JSON value as a token, bypassing validation.
func encodeRaw(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestRoundTrip(t *testing.T) {
	f := fixtures()
	tok := goodToken(f)
	s, err := tok.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(s, "\n\r ") {
		t.Fatal("token is not one line")
	}
	for _, in := range []string{s, "  " + s + "\n", "\n" + s + "\r\n"} {
		got, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if *got != *tok {
			t.Fatalf("round trip differs")
		}
	}
	vk, err := tok.VerifyKey()
	if err != nil || !vk.Equal(f.verifyKey) {
		t.Fatalf("VerifyKey: %v", err)
	}
	cert, err := tok.Certificate()
	if err != nil || cert.Subject.CommonName != "pool-a" {
		t.Fatalf("Certificate: %v", err)
	}
	addr, err := tok.BrokerAddr()
	if err != nil || addr != "broker.example:8883" {
		t.Fatalf("BrokerAddr = %q, %v", addr, err)
	}
}

func TestParseRejects(t *testing.T) {
	f := fixtures()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	smallKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	wrongCN := pemCert(issue(t, f.caCert, f.caKey, &f.poolKey.PublicKey, &x509.Certificate{Subject: pkix.Name{CommonName: "pool-b"}}))
	ecCert := pemCert(issue(t, f.caCert, f.caKey, &ecKey.PublicKey, &x509.Certificate{Subject: pkix.Name{CommonName: "pool-a"}}))
	smallCert := pemCert(issue(t, f.caCert, f.caKey, &smallKey.PublicKey, &x509.Certificate{Subject: pkix.Name{CommonName: "pool-a"}}))
	mod := func(m func(tok *Token)) func(t *testing.T) string {
		return func(t *testing.T) string {
			tok := goodToken(f)
			m(tok)
			return encodeRaw(t, tok)
		}
	}
	asMap := func(m func(doc map[string]any)) func(t *testing.T) string {
		return func(t *testing.T) string {
			b, _ := json.Marshal(goodToken(f))
			var doc map[string]any
			_ = json.Unmarshal(b, &doc)
			m(doc)
			return encodeRaw(t, doc)
		}
	}
	tests := []struct {
		name  string
		token func(t *testing.T) string
		want  string // substring of the error: the field at fault
	}{
		{"empty", func(*testing.T) string { return "  \n" }, "empty"},
		{"bad base64", func(*testing.T) string { return "not*base64!" }, "base64"},
		{"url-safe base64", func(t *testing.T) string {
			return strings.NewReplacer("+", "-", "/", "_").Replace(encodeRaw(t, goodToken(f)) + "-_")
		}, "base64"},
		{"two lines", func(t *testing.T) string { s := encodeRaw(t, goodToken(f)); return s[:20] + "\n" + s[20:] }, "base64"},
		{"not JSON", func(*testing.T) string { return base64.StdEncoding.EncodeToString([]byte("hello")) }, "JSON"},
		{"JSON array", func(*testing.T) string { return base64.StdEncoding.EncodeToString([]byte("[]")) }, "JSON"},
		{"trailing JSON", func(t *testing.T) string {
			b, _ := json.Marshal(goodToken(f))
			return base64.StdEncoding.EncodeToString(append(b, "{}"...))
		}, "trailing"},
		{"unknown field", asMap(func(d map[string]any) { d["extra"] = 1 }), "extra"},
		{"missing version", asMap(func(d map[string]any) { delete(d, "version") }), "version"},
		{"missing broker", asMap(func(d map[string]any) { delete(d, "broker") }), "broker"},
		{"missing pool_id", asMap(func(d map[string]any) { delete(d, "pool_id") }), "pool_id"},
		{"missing broker_ca_pem", asMap(func(d map[string]any) { delete(d, "broker_ca_pem") }), "broker_ca_pem"},
		{"missing certificate_pem", asMap(func(d map[string]any) { delete(d, "certificate_pem") }), "certificate_pem"},
		{"missing run_verification_key", asMap(func(d map[string]any) { delete(d, "run_verification_key") }), "run_verification_key"},
		{"version as string", asMap(func(d map[string]any) { d["version"] = "1" }), "version"},
		{"version 2", mod(func(tok *Token) { tok.Version = 2 }), "version"},
		{"broker ssl scheme", mod(func(tok *Token) { tok.Broker = "ssl://broker.example:8883" }), "broker"},
		{"broker tcp scheme", mod(func(tok *Token) { tok.Broker = "mqtt://broker.example:1883" }), "broker"},
		{"broker no port", mod(func(tok *Token) { tok.Broker = "mqtts://broker.example" }), "broker"},
		{"broker empty port", mod(func(tok *Token) { tok.Broker = "mqtts://broker.example:" }), "broker"},
		{"broker port 0", mod(func(tok *Token) { tok.Broker = "mqtts://broker.example:0" }), "broker"},
		{"broker port too big", mod(func(tok *Token) { tok.Broker = "mqtts://broker.example:65536" }), "broker"},
		{"broker no host", mod(func(tok *Token) { tok.Broker = "mqtts://:8883" }), "broker"},
		{"broker path", mod(func(tok *Token) { tok.Broker = "mqtts://broker.example:8883/mqtt" }), "broker"},
		{"broker user", mod(func(tok *Token) { tok.Broker = "mqtts://u:p@broker.example:8883" }), "broker"},
		{"broker query", mod(func(tok *Token) { tok.Broker = "mqtts://broker.example:8883?x=1" }), "broker"},
		{"broker host:port only", mod(func(tok *Token) { tok.Broker = "broker.example:8883" }), "broker"},
		{"broker empty", mod(func(tok *Token) { tok.Broker = "" }), "broker"},
		{"pool id empty", mod(func(tok *Token) { tok.PoolID = "" }), "pool_id"},
		{"pool id with slash", mod(func(tok *Token) { tok.PoolID = "pool/a" }), "pool_id"},
		{"pool id with wildcard", mod(func(tok *Token) { tok.PoolID = "pool-#" }), "pool_id"},
		{"CA not PEM", mod(func(tok *Token) { tok.BrokerCAPEM = "hello" }), "broker_ca_pem"},
		{"CA empty", mod(func(tok *Token) { tok.BrokerCAPEM = "" }), "broker_ca_pem"},
		{"CA wrong block type", mod(func(tok *Token) {
			tok.BrokerCAPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}))
		}), "broker_ca_pem"},
		{"CA garbage DER", mod(func(tok *Token) {
			tok.BrokerCAPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}))
		}), "broker_ca_pem"},
		{"CA trailing junk", mod(func(tok *Token) { tok.BrokerCAPEM += "junk" }), "broker_ca_pem"},
		{"certificate empty", mod(func(tok *Token) { tok.CertificatePEM = "" }), "certificate_pem"},
		{"certificate two blocks", mod(func(tok *Token) { tok.CertificatePEM += f.caPEM }), "certificate_pem"},
		{"certificate garbage DER", mod(func(tok *Token) {
			tok.CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}))
		}), "certificate_pem"},
		{"certificate CN is not the pool id", mod(func(tok *Token) { tok.CertificatePEM = wrongCN }), "certificate_pem"},
		{"certificate key not RSA", mod(func(tok *Token) { tok.CertificatePEM = ecCert }), "certificate_pem"},
		{"certificate key too small", mod(func(tok *Token) { tok.CertificatePEM = smallCert }), "certificate_pem"},
		{"verification key short", mod(func(tok *Token) {
			tok.RunVerificationKey = base64.StdEncoding.EncodeToString(make([]byte, 31))
		}), "run_verification_key"},
		{"verification key long", mod(func(tok *Token) {
			tok.RunVerificationKey = base64.StdEncoding.EncodeToString(make([]byte, 33))
		}), "run_verification_key"},
		{"verification key not base64", mod(func(tok *Token) { tok.RunVerificationKey = "!!" }), "run_verification_key"},
		{"verification key empty", mod(func(tok *Token) { tok.RunVerificationKey = "" }), "run_verification_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.token(t))
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("got %v, want ErrInvalidToken", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
		})
	}
}

func TestBrokerForms(t *testing.T) {
	tests := []struct{ broker, addr, host string }{
		{"mqtts://broker.example:8883", "broker.example:8883", "broker.example"},
		{"mqtts://127.0.0.1:1", "127.0.0.1:1", "127.0.0.1"},
		{"mqtts://[::1]:65535", "[::1]:65535", "::1"},
		{"mqtts://broker.example:8883/", "broker.example:8883", "broker.example"},
	}
	f := fixtures()
	for _, tt := range tests {
		t.Run(tt.broker, func(t *testing.T) {
			tok := goodToken(f)
			tok.Broker = tt.broker
			if _, err := tok.Encode(); err != nil {
				t.Fatal(err)
			}
			addr, err := tok.BrokerAddr()
			if err != nil || addr != tt.addr {
				t.Fatalf("BrokerAddr = %q, %v", addr, err)
			}
			cfg, err := tok.ClientTLS(f.poolKey)
			if err != nil || cfg.ServerName != tt.host {
				t.Fatalf("ServerName = %q, %v", cfg.ServerName, err)
			}
		})
	}
}

func TestEncodeValidates(t *testing.T) {
	tok := goodToken(fixtures())
	tok.PoolID = "other"
	if _, err := tok.Encode(); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Encode of an invalid token: %v", err)
	}
}

func TestMatchKey(t *testing.T) {
	f := fixtures()
	tok := goodToken(f)
	if err := MatchKey(tok, f.poolKey); err != nil {
		t.Fatalf("matching key: %v", err)
	}
	if err := MatchKey(tok, f.otherKey); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("other key: %v", err)
	}
	if err := MatchKey(tok, nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("nil key: %v", err)
	}
	if _, err := tok.ClientTLS(f.otherKey); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("ClientTLS with another key: %v", err)
	}
}

// TestClientTLSHandshake runs a real mutual-TLS handshake against a server that
// requires a client certificate from the CA.
func TestClientTLSHandshake(t *testing.T) {
	f := fixtures()
	tok := goodToken(f)
	cfg, err := tok.ClientTLS(f.poolKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.caCert)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{f.serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots}
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	errc := make(chan error, 1)
	var peerCN string
	go func() {
		srv := tls.Server(s, srvCfg)
		err := srv.Handshake()
		if err == nil {
			peerCN = srv.ConnectionState().PeerCertificates[0].Subject.CommonName
		}
		errc <- err
	}()
	client := tls.Client(c, cfg)
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if peerCN != "pool-a" {
		t.Fatalf("server saw CN %q", peerCN)
	}
}

func TestCheckValidity(t *testing.T) {
	f := fixtures()
	tok := goodToken(f) // valid from an hour ago to in an hour
	now := time.Now()
	if err := tok.CheckValidity(now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now.Add(2 * time.Hour), "expired at"},
		{now.Add(-2 * time.Hour), "is not valid before"},
	} {
		err := tok.CheckValidity(tc.at)
		if !errors.Is(err, ErrCertificateNotValid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `CN "pool-a"`) {
			t.Errorf("CheckValidity(%v) = %v, want %q", tc.at, err, tc.want)
		}
	}
}
