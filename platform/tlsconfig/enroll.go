package tlsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// EnrollmentID is the id of an enrollment issuer: an intermediate CA of the
// pool CA whose certificate names spiffe://hangar/<pool>/<role>/enroll and
// which can only vouch for identities of that pool and role (checked on
// every chain, see ADR 0008). Replicated executors (compose --scale, a
// Kubernetes Deployment) hold the executor enrollment issuer and mint their
// own certificate at start, with their host name as id.
const EnrollmentID = "enroll"

// enrolledValidity is the lifetime of a certificate minted by Enroll; the
// process mints a new one at each start.
const enrolledValidity = 30 * 24 * time.Hour

// EnrollFiles is Enroll over PEM files.
func EnrollFiles(caFile, issuerCertFile, issuerKeyFile, id string, want Role) (*Pool, error) {
	caPEM, err := readOptional(caFile, "CA")
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := readPair(issuerCertFile, issuerKeyFile)
	if err != nil {
		return nil, err
	}
	p, err := Enroll(caPEM, certPEM, keyPEM, id, want)
	if err != nil {
		return nil, fmt.Errorf("enroll with issuer %s: %w", issuerCertFile, err)
	}
	return p, nil
}

// Enroll mints, in memory, a certificate for id with the enrollment issuer
// (certPEM, keyPEM) of role want, and returns the Pool it makes with the
// pool CA.
func Enroll(caPEM, issuerCertPEM, issuerKeyPEM []byte, id string, want Role) (*Pool, error) {
	issuer, err := keyPair(issuerCertPEM, issuerKeyPEM, "enrollment issuer")
	if err != nil {
		return nil, err
	}
	ic, err := x509.ParseCertificate(issuer.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse enrollment issuer: %w", err)
	}
	iid, err := IdentityOf(ic)
	if err != nil {
		return nil, fmt.Errorf("enrollment issuer: %w", err)
	}
	if !ic.IsCA || iid.ID != EnrollmentID || iid.Role != want {
		return nil, fmt.Errorf("enrollment issuer %s is not a %s enrollment CA", iid, want)
	}
	leafID := Identity{Pool: iid.Pool, Role: want, ID: id}
	if err := leafID.Validate(); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	now := time.Now()
	notAfter := now.Add(enrolledValidity)
	if notAfter.After(ic.NotAfter) {
		notAfter = ic.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id, OrganizationalUnit: []string{string(want)}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  ic.ExtKeyUsage,
		URIs:         []*url.URL{leafID.URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ic, &key.PublicKey, issuer.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	chainPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ic.Raw})...)
	return LoadPool(caPEM, chainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), want)
}
