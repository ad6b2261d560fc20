// Package pki holds the control plane's certificate operations: keys, CSRs, the
// CA, and the certificates it issues (broker server certificate, control-plane
// client certificate, pool client certificates signed from the pool's CSR).
//
// The CA and the broker and control-plane certificates use ECDSA P-256. Pool
// certificates are issued for the pool's own RSA key (at least 2048 bits), which
// also decrypts the pool's run specs.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/hangar-dev/hangar/platform/atomicfile"
)

const (
	// MinRSABits is the smallest RSA key NewRSAKey makes and SignCSR accepts.
	MinRSABits = 2048
	// CAValidity is the lifetime of a new CA.
	CAValidity = 10 * 365 * 24 * time.Hour
	// ServiceValidity is the lifetime of broker and control-plane certificates.
	ServiceValidity = 2 * 365 * 24 * time.Hour
	// PoolValidity is the default lifetime of a pool certificate.
	PoolValidity = 3 * 365 * 24 * time.Hour
	// backdate tolerates clock skew between the CA and the peers.
	backdate = 5 * time.Minute
)

// NewRSAKey generates an RSA key of bits (at least MinRSABits).
func NewRSAKey(bits int) (*rsa.PrivateKey, error) {
	if bits < MinRSABits {
		return nil, fmt.Errorf("new RSA key: %w: %d bits, want at least %d", ErrInvalidKey, bits, MinRSABits)
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("new RSA key: %w", err)
	}
	return k, nil
}

// NewECKey generates an ECDSA P-256 key.
func NewECKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ECDSA key: %w", err)
	}
	return k, nil
}

// CreateCSR returns a PEM "CERTIFICATE REQUEST" for key with subject CN cn.
func CreateCSR(key crypto.Signer, cn string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// EncodeKeyPEM returns key as a PKCS#8 "PRIVATE KEY" PEM.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM parses a "PRIVATE KEY" (PKCS#8), "RSA PRIVATE KEY" or
// "EC PRIVATE KEY" PEM. Errors never contain key material.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("parse private key: %w: no PEM block", ErrInvalidKey)
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("parse private key: %w: PEM block is %q", ErrInvalidKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w: %s block does not parse", ErrInvalidKey, block.Type)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse private key: %w: unsupported key type %T", ErrInvalidKey, k)
	}
	return s, nil
}

// WriteKeyPEM writes key as PKCS#8 PEM to path with mode 0600, atomically
// (temporary file, then rename), replacing an existing file.
func WriteKeyPEM(path string, key crypto.Signer) error {
	b, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	defer clear(b)
	return atomicfile.Write(path, b, 0o600)
}

// EncodeCertPEM returns der as a "CERTIFICATE" PEM.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseCertPEM parses the first CERTIFICATE block of b.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("parse certificate: no CERTIFICATE PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// CA is a certificate authority: its certificate and key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// NewCA creates a self-signed ECDSA P-256 CA named cn, valid for CAValidity,
// which signs leaf certificates only.
func NewCA(cn string) (*CA, error) { return newCA(cn, 0) }

// NewPoolCA creates a pool-internal CA (ADR 0008): as NewCA, but it may also
// sign enrollment CAs (IssueEnrollmentCA), one level deep.
func NewPoolCA(cn string) (*CA, error) { return newCA(cn, 1) }

func newCA(cn string, maxPathLen int) (*CA, error) {
	key, err := NewECKey()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	return &CA{Cert: cert, CertPEM: EncodeCertPEM(der), Key: key}, nil
}

// LoadCA parses a CA certificate and its private key and checks they match.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA: certificate %q is not a CA", cert.Subject.CommonName)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load CA: %w: the CA key does not match the CA certificate", ErrInvalidKey)
	}
	return &CA{Cert: cert, CertPEM: EncodeCertPEM(cert.Raw), Key: key}, nil
}

// CertPool returns a pool holding only the CA's certificate.
func (ca *CA) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueServerCert issues a TLS server certificate and a fresh ECDSA P-256 key
// for hosts. "localhost", 127.0.0.1 and ::1 are always included; IP addresses
// become IP SANs, other names DNS SANs. It returns PEMs (the key as PKCS#8).
func IssueServerCert(ca *CA, hosts []string) (certPEM, keyPEM []byte, err error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "hangar-broker"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if h == "" {
			return nil, nil, fmt.Errorf("issue server certificate: empty host name")
		}
		if ip := net.ParseIP(h); ip != nil {
			if !seen[ip.String()] {
				seen[ip.String()] = true
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
			continue
		}
		if !seen[h] {
			seen[h] = true
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	return issueWithNewKey(ca, tmpl, "issue server certificate")
}

// IssueClientCert issues a TLS client certificate with CN cn and a fresh ECDSA
// P-256 key. It returns PEMs (the key as PKCS#8).
func IssueClientCert(ca *CA, cn string) (certPEM, keyPEM []byte, err error) {
	if cn == "" {
		return nil, nil, fmt.Errorf("issue client certificate: empty CN")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issueWithNewKey(ca, tmpl, "issue client certificate")
}

func issueWithNewKey(ca *CA, tmpl *x509.Certificate, op string) (certPEM, keyPEM []byte, err error) {
	key, err := NewECKey()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	der, err := issue(ca, tmpl, &key.PublicKey, ServiceValidity)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	keyPEM, err = EncodeKeyPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	return EncodeCertPEM(der), keyPEM, nil
}

// SignCSR issues a pool client certificate from a PEM CSR. It verifies the CSR's
// signature, requires an RSA key of at least MinRSABits, and sets the subject CN
// to cn (the pool id): the CN and any extensions in the CSR are ignored. The
// certificate has ExtKeyUsageClientAuth and lasts validity (PoolValidity if 0).
func SignCSR(ca *CA, csrPEM []byte, cn string, validity time.Duration) ([]byte, error) {
	if cn == "" {
		return nil, fmt.Errorf("sign CSR: empty CN")
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("sign CSR: %w: no PEM block (want CERTIFICATE REQUEST)", ErrInvalidCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("sign CSR: %w: PEM block is %q, want CERTIFICATE REQUEST", ErrInvalidCSR, block.Type)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sign CSR: %w: %v", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign CSR: %w: signature does not verify: %v", ErrInvalidCSR, err)
	}
	pub, ok := csr.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("sign CSR: %w: key is %T, a pool key must be RSA", ErrInvalidCSR, csr.PublicKey)
	}
	if bits := pub.N.BitLen(); bits < MinRSABits {
		return nil, fmt.Errorf("sign CSR: %w: RSA key has %d bits, want at least %d", ErrInvalidCSR, bits, MinRSABits)
	}
	if validity <= 0 {
		validity = PoolValidity
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := issue(ca, tmpl, pub, validity)
	if err != nil {
		return nil, fmt.Errorf("sign CSR: %w", err)
	}
	return EncodeCertPEM(der), nil
}

func issue(ca *CA, tmpl *x509.Certificate, pub crypto.PublicKey, validity time.Duration) ([]byte, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, fmt.Errorf("no CA")
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.SubjectKeyId = keyID(pub)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return der, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// keyID is the SHA-256 of the PKIX public key, truncated to 20 bytes.
func keyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}
