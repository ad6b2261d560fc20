package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Pool is a service's TLS material inside a pool (ADR 0008): the
// pool-internal CA, and the service's own certificate and key, which name its
// identity. Every in-pool link is mutual TLS between two such certificates,
// and each side checks the other's role.
type Pool struct {
	// Identity is what the own certificate names.
	Identity Identity
	// CAs holds the pool-internal CA.
	CAs *x509.CertPool
	// Cert is the own certificate (Leaf set) and key.
	Cert tls.Certificate
}

// LoadPoolFiles reads the pool CA, the own certificate and its key (PEM
// files; HANGAR_TLS_CA, HANGAR_TLS_CERT, HANGAR_TLS_KEY in every service).
// When every name is empty it returns nil, nil: no TLS. Otherwise all three
// are needed, the certificate must chain to the CA and carry an identity of
// role want.
func LoadPoolFiles(caFile, certFile, keyFile string, want Role) (*Pool, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("pool TLS: the CA, certificate and key files are needed together")
	}
	caPEM, err := readOptional(caFile, "CA")
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := readPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	p, err := LoadPool(caPEM, certPEM, keyPEM, want)
	if err != nil {
		return nil, fmt.Errorf("pool TLS (certificate %s, CA %s): %w", certFile, caFile, err)
	}
	return p, nil
}

// LoadPool is LoadPoolFiles over PEM bytes.
func LoadPool(caPEM, certPEM, keyPEM []byte, want Role) (*Pool, error) {
	cas, err := certPool(caPEM, "CA")
	if err != nil {
		return nil, err
	}
	cert, err := keyPair(certPEM, keyPEM, "certificate and key")
	if err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	if _, err := verifyChain(cert.Certificate, cas, time.Now(), x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("own certificate: %w", err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("own certificate: %w", err)
	}
	if id.Role != want {
		return nil, fmt.Errorf("own certificate is for role %s (%s), this service needs a certificate of role %s", id.Role, id, want)
	}
	return &Pool{Identity: id, CAs: cas, Cert: cert}, nil
}

// ServerConfig is the configuration of an in-pool gRPC server: it presents
// the own certificate and requires a client certificate of the pool CA.
// Which roles may call what is the server's to check (serve.Config.Access).
func (p *Pool) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   MinVersion,
		Certificates: []tls.Certificate{p.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CAs,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := p.peer(cs, "")
			return err
		},
	}
}

// ClientConfig is the configuration of an in-pool client: it presents the
// own certificate and accepts only a server whose certificate chains to the
// pool CA and names a peer of role server in the same pool. The server is
// known by its identity, not by its host name, so the address it is dialled
// at does not have to be in its certificate.
func (p *Pool) ClientConfig(server Role) *tls.Config {
	return &tls.Config{
		MinVersion:   MinVersion,
		Certificates: []tls.Certificate{p.Cert},
		// The chain and the identity are verified in VerifyConnection,
		// against the pool CA, instead of the host name.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := p.peer(cs, server)
			return err
		},
	}
}

// peer verifies the peer's chain against the pool CA and returns its
// identity, which must be in the same pool and, when want is set, of role
// want.
func (p *Pool) peer(cs tls.ConnectionState, want Role) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("peer presented no certificate")
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	usage := x509.ExtKeyUsageClientAuth
	if want != "" {
		usage = x509.ExtKeyUsageServerAuth
	}
	if _, err := verifyChain(raw, p.CAs, time.Now(), usage); err != nil {
		return Identity{}, fmt.Errorf("peer certificate: %w", err)
	}
	id, err := IdentityOf(cs.PeerCertificates[0])
	if err != nil {
		return Identity{}, fmt.Errorf("peer certificate: %w", err)
	}
	if id.Pool != p.Identity.Pool {
		return Identity{}, fmt.Errorf("peer %s belongs to pool %q, this is pool %q", id, id.Pool, p.Identity.Pool)
	}
	if want != "" && id.Role != want {
		return Identity{}, fmt.Errorf("peer %s has role %s, want %s", id, id.Role, want)
	}
	return id, nil
}

// VerifyChain checks that chain (DER, leaf first) chains to cas at time now
// and returns its leaf's identity.
func VerifyChain(chain [][]byte, cas *x509.CertPool, now time.Time) (Identity, error) {
	leaf, err := verifyChain(chain, cas, now, x509.ExtKeyUsageAny)
	if err != nil {
		return Identity{}, err
	}
	return IdentityOf(leaf)
}

func verifyChain(chain [][]byte, cas *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d of the chain: %w", i, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if certs[0].IsCA {
		return nil, errors.New("a CA certificate cannot be used as an identity")
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots: cas, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return nil, fmt.Errorf("does not verify against the pool CA: %w", err)
	}
	// An intermediate is an enrollment issuer (EnrollmentIdentity): it
	// may only vouch for identities of its own pool and role.
	var lastErr error
	for _, chain := range chains {
		if lastErr = checkIntermediates(certs[0], chain); lastErr == nil {
			return certs[0], nil
		}
	}
	return nil, lastErr
}

func checkIntermediates(leaf *x509.Certificate, chain []*x509.Certificate) error {
	if len(chain) <= 2 {
		return nil
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return err
	}
	for _, c := range chain[1 : len(chain)-1] {
		issuer, err := IdentityOf(c)
		if err != nil {
			return fmt.Errorf("intermediate %q: %w", c.Subject.CommonName, err)
		}
		if issuer.ID != EnrollmentID || issuer.Pool != id.Pool || issuer.Role != id.Role {
			return fmt.Errorf("intermediate %s may not issue %s", issuer, id)
		}
	}
	return nil
}
