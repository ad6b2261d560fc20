// Package pooltoken encodes and parses the pool token (HANGAR_TOKEN) and the pool
// private key (HANGAR_POOL_PRIVATE_KEY).
//
// A token is one line of standard base64 of a JSON document:
//
//	{
//	  "version": 1,
//	  "broker": "mqtts://host:port",
//	  "pool_id": "...",
//	  "broker_ca_pem": "-----BEGIN CERTIFICATE-----...",
//	  "certificate_pem": "-----BEGIN CERTIFICATE-----...",
//	  "run_verification_key": "<standard base64 of the 32-byte Ed25519 public key>"
//	}
//
// certificate_pem is the pool's client certificate (CN = pool_id) for the
// broker's mutual TLS, issued for the pool's RSA key; broker_ca_pem holds the
// CA(s) the broker's certificate chains to; run_verification_key verifies the
// control plane's signed run envelopes and commands. Parsing is strict: unknown
// fields, missing fields and values that do not parse are errors naming the field.
package pooltoken

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hangar-dev/hangar/platform/ids"
)

// Version is the token format version this package writes and reads.
const Version = 1

// MinRSABits is the smallest pool key accepted.
const MinRSABits = 2048

// maxTokenLen bounds the input to Parse.
const maxTokenLen = 256 << 10

// Token is a decoded pool token. Its fields are the JSON document's.
type Token struct {
	Version int `json:"version"`
	// Broker is "mqtts://host:port".
	Broker string `json:"broker"`
	// PoolID is the pool's id: 1-64 characters of [A-Za-z0-9_-], and the CN of
	// CertificatePEM.
	PoolID string `json:"pool_id"`
	// BrokerCAPEM holds one or more CERTIFICATE blocks.
	BrokerCAPEM string `json:"broker_ca_pem"`
	// CertificatePEM is one CERTIFICATE block: the pool's client certificate.
	CertificatePEM string `json:"certificate_pem"`
	// RunVerificationKey is standard base64 of the Ed25519 public key.
	RunVerificationKey string `json:"run_verification_key"`
}

// Parse decodes and validates a token. Surrounding whitespace is ignored.
func Parse(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(s) > maxTokenLen {
		return nil, fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidToken, len(s), maxTokenLen)
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return nil, fmt.Errorf("%w: not one line of standard base64: contains whitespace", ErrInvalidToken)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not one line of standard base64: %v", ErrInvalidToken, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var doc struct {
		Version            *int    `json:"version"`
		Broker             *string `json:"broker"`
		PoolID             *string `json:"pool_id"`
		BrokerCAPEM        *string `json:"broker_ca_pem"`
		CertificatePEM     *string `json:"certificate_pem"`
		RunVerificationKey *string `json:"run_verification_key"`
	}
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: JSON: %v", ErrInvalidToken, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: JSON: trailing data after the document", ErrInvalidToken)
	}
	missing := func(name string) error { return fmt.Errorf("%w: field %s is missing", ErrInvalidToken, name) }
	switch {
	case doc.Version == nil:
		return nil, missing("version")
	case doc.Broker == nil:
		return nil, missing("broker")
	case doc.PoolID == nil:
		return nil, missing("pool_id")
	case doc.BrokerCAPEM == nil:
		return nil, missing("broker_ca_pem")
	case doc.CertificatePEM == nil:
		return nil, missing("certificate_pem")
	case doc.RunVerificationKey == nil:
		return nil, missing("run_verification_key")
	}
	t := &Token{
		Version:            *doc.Version,
		Broker:             *doc.Broker,
		PoolID:             *doc.PoolID,
		BrokerCAPEM:        *doc.BrokerCAPEM,
		CertificatePEM:     *doc.CertificatePEM,
		RunVerificationKey: *doc.RunVerificationKey,
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// Encode validates t and returns its one-line form.
func (t *Token) Encode() (string, error) {
	if err := t.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode pool token: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Validate checks every field; the error wraps ErrInvalidToken and names the
// field.
func (t *Token) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: field %s: %s", ErrInvalidToken, field, fmt.Sprintf(format, args...))
	}
	if t.Version != Version {
		return bad("version", "%d, want %d", t.Version, Version)
	}
	if _, _, err := parseBroker(t.Broker); err != nil {
		return bad("broker", "%v", err)
	}
	if err := ids.CheckPoolID(t.PoolID); err != nil {
		return bad("pool_id", "%v", err)
	}
	if _, err := parseCAs(t.BrokerCAPEM); err != nil {
		return bad("broker_ca_pem", "%v", err)
	}
	cert, err := parseCertificate(t.CertificatePEM)
	if err != nil {
		return bad("certificate_pem", "%v", err)
	}
	if cert.Subject.CommonName != t.PoolID {
		return bad("certificate_pem", "certificate CN %q is not the pool id %q", cert.Subject.CommonName, t.PoolID)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return bad("certificate_pem", "certificate key is %T, want RSA", cert.PublicKey)
	}
	if bits := pub.N.BitLen(); bits < MinRSABits {
		return bad("certificate_pem", "certificate key has %d bits, want at least %d", bits, MinRSABits)
	}
	if _, err := decodeVerifyKey(t.RunVerificationKey); err != nil {
		return bad("run_verification_key", "%v", err)
	}
	return nil
}

// Certificate returns the pool's parsed client certificate.
func (t *Token) Certificate() (*x509.Certificate, error) {
	cert, err := parseCertificate(t.CertificatePEM)
	if err != nil {
		return nil, fmt.Errorf("%w: field certificate_pem: %v", ErrInvalidToken, err)
	}
	return cert, nil
}

// PublicKey returns the pool's RSA public key, from its certificate.
func (t *Token) PublicKey() (*rsa.PublicKey, error) {
	cert, err := t.Certificate()
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: field certificate_pem: certificate key is %T, want RSA", ErrInvalidToken, cert.PublicKey)
	}
	return pub, nil
}

// VerifyKey returns the control plane's run-verification key.
func (t *Token) VerifyKey() (ed25519.PublicKey, error) {
	k, err := decodeVerifyKey(t.RunVerificationKey)
	if err != nil {
		return nil, fmt.Errorf("%w: field run_verification_key: %v", ErrInvalidToken, err)
	}
	return k, nil
}

// BrokerCAs returns the broker CA certificates as a pool.
func (t *Token) BrokerCAs() (*x509.CertPool, error) {
	p, err := parseCAs(t.BrokerCAPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: field broker_ca_pem: %v", ErrInvalidToken, err)
	}
	return p, nil
}

// BrokerAddr returns the broker's "host:port" (IPv6 hosts in brackets).
func (t *Token) BrokerAddr() (string, error) {
	host, port, err := parseBroker(t.Broker)
	if err != nil {
		return "", fmt.Errorf("%w: field broker: %v", ErrInvalidToken, err)
	}
	return net.JoinHostPort(host, port), nil
}

// ClientTLS returns the TLS configuration to connect to the broker: the pool's
// certificate with poolKey as client certificate, the broker CA as the only
// roots, and the broker's host as ServerName. poolKey must match the certificate.
func (t *Token) ClientTLS(poolKey *rsa.PrivateKey) (*tls.Config, error) {
	if err := MatchKey(t, poolKey); err != nil {
		return nil, err
	}
	cert, err := t.Certificate()
	if err != nil {
		return nil, err
	}
	roots, err := t.BrokerCAs()
	if err != nil {
		return nil, err
	}
	host, _, err := parseBroker(t.Broker)
	if err != nil {
		return nil, fmt.Errorf("%w: field broker: %v", ErrInvalidToken, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: poolKey, Leaf: cert}},
		RootCAs:      roots,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// MatchKey returns an error wrapping ErrKeyMismatch if poolKey is not the private
// key of t's certificate (ErrInvalidKey if it is nil or unusable).
func MatchKey(t *Token, poolKey *rsa.PrivateKey) error {
	if t == nil {
		return fmt.Errorf("%w: no token", ErrInvalidToken)
	}
	if poolKey == nil || poolKey.N == nil {
		return fmt.Errorf("%w: no key", ErrInvalidKey)
	}
	pub, err := t.PublicKey()
	if err != nil {
		return err
	}
	if !pub.Equal(&poolKey.PublicKey) {
		return fmt.Errorf("%w (pool %s)", ErrKeyMismatch, t.PoolID)
	}
	return nil
}

// parseBroker checks "mqtts://host:port" and returns host (without brackets)
// and port.
func parseBroker(s string) (host, port string, err error) {
	if s == "" {
		return "", "", fmt.Errorf("empty, want mqtts://HOST:PORT")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("%q is not a URL, want mqtts://HOST:PORT", s)
	}
	if u.Scheme != "mqtts" {
		return "", "", fmt.Errorf("%q: scheme must be mqtts (MQTT over TLS), want mqtts://HOST:PORT", s)
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", "", fmt.Errorf("%q: only mqtts://HOST:PORT is allowed (no user, path, query or fragment)", s)
	}
	host, port = u.Hostname(), u.Port()
	if host == "" {
		return "", "", fmt.Errorf("%q has no host, want mqtts://HOST:PORT", s)
	}
	if !strings.HasSuffix(u.Host, ":"+port) || port == "" {
		return "", "", fmt.Errorf("%q has no port, want mqtts://HOST:PORT", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("%q: port must be 1-65535", s)
	}
	return host, port, nil
}

func parseCertificate(s string) (*x509.Certificate, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty")
	}
	block, rest := pem.Decode([]byte(s))
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block is %q, want CERTIFICATE", block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("more than one PEM block, want exactly one CERTIFICATE")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate does not parse: %v", err)
	}
	return cert, nil
}

func parseCAs(s string) (*x509.CertPool, error) {
	rest := []byte(s)
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse: %v", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("data that is not a PEM block")
	}
	if n == 0 {
		return nil, fmt.Errorf("no CERTIFICATE PEM block")
	}
	return pool, nil
}

func decodeVerifyKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not standard base64")
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%d bytes, an Ed25519 public key is %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// CheckValidity returns nil if the pool's certificate is valid at now, else an
// error naming the certificate and its validity period: expired, or not yet
// valid. The broker refuses a certificate outside it, so a gateway checks at
// start instead of retrying for ever.
func (t *Token) CheckValidity(now time.Time) error {
	cert, err := t.Certificate()
	if err != nil {
		return err
	}
	const layout = "2006-01-02 15:04:05 MST"
	switch {
	case now.After(cert.NotAfter):
		return fmt.Errorf("%w: the pool certificate (CN %q) expired at %s (%s ago); the pool needs a new certificate from the control plane",
			ErrCertificateNotValid, cert.Subject.CommonName, cert.NotAfter.UTC().Format(layout), now.Sub(cert.NotAfter).Round(time.Second))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%w: the pool certificate (CN %q) is not valid before %s (in %s): check this host's clock",
			ErrCertificateNotValid, cert.Subject.CommonName, cert.NotBefore.UTC().Format(layout), cert.NotBefore.Sub(now).Round(time.Second))
	}
	return nil
}
