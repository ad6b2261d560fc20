package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"

	"github.com/hangar-dev/hangar/platform/atomicfile"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

// The pool-internal PKI (ADR 0008): one CA per pool, separate from the
// control plane's, and certificates that each carry one identity
// spiffe://hangar/<pool>/<role>/<id> (tlsconfig.Identity).

// roleUsages are the extended key usages of each role's certificate: servers
// (policy, logship) serve, executors and operators call, the gateway does
// both.
var roleUsages = map[tlsconfig.Role][]x509.ExtKeyUsage{
	tlsconfig.RoleGateway:  {x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	tlsconfig.RolePolicy:   {x509.ExtKeyUsageServerAuth},
	tlsconfig.RoleLogship:  {x509.ExtKeyUsageServerAuth},
	tlsconfig.RoleExecutor: {x509.ExtKeyUsageClientAuth},
	tlsconfig.RoleOperator: {x509.ExtKeyUsageClientAuth},
}

// IssueRoleCert issues a certificate for id with a fresh ECDSA P-256 key.
// hosts (server roles) become DNS or IP SANs for other tools' sake; Hangar's
// own clients check the identity, not the host name. It returns PEMs.
func IssueRoleCert(ca *CA, id tlsconfig.Identity, hosts []string) (certPEM, keyPEM []byte, err error) {
	if err := id.Validate(); err != nil {
		return nil, nil, fmt.Errorf("issue %s certificate: %w", id.Role, err)
	}
	if id.ID == tlsconfig.EnrollmentID {
		return nil, nil, fmt.Errorf("issue %s certificate: the id %q is reserved for enrollment issuers", id.Role, id.ID)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.ID, OrganizationalUnit: []string{string(id.Role)}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: roleUsages[id.Role],
		URIs:        []*url.URL{id.URI()},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return issueWithNewKey(ca, tmpl, "issue "+string(id.Role)+" certificate")
}

// IssueEnrollmentCA issues an intermediate CA that can only vouch for
// identities of pool and role (tlsconfig.EnrollmentID): replicas that
// cannot each be given a certificate in advance (compose --scale, a
// Kubernetes Deployment) hold it and mint their own at start.
func IssueEnrollmentCA(ca *CA, pool string, role tlsconfig.Role) (certPEM, keyPEM []byte, err error) {
	id := tlsconfig.Identity{Pool: pool, Role: role, ID: tlsconfig.EnrollmentID}
	if err := id.Validate(); err != nil {
		return nil, nil, fmt.Errorf("issue enrollment CA: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "hangar " + pool + " " + string(role) + " enrollment", OrganizationalUnit: []string{string(role)}},
		IsCA:                  true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           roleUsages[role],
		URIs:                  []*url.URL{id.URI()},
		BasicConstraintsValid: true,
	}
	return issueWithNewKey(ca, tmpl, "issue enrollment CA")
}

// PoolTLSDir is a directory of the pool-internal PKI: ca.crt and ca.key,
// and <name>.crt / <name>.key per certificate.
type PoolTLSDir string

// CAFile is the pool CA certificate (HANGAR_TLS_CA of every service).
func (d PoolTLSDir) CAFile() string { return filepath.Join(string(d), "ca.crt") }

// CertFile and KeyFile name a certificate's files.
func (d PoolTLSDir) CertFile(name string) string { return filepath.Join(string(d), name+".crt") }

// KeyFile is the key of CertFile(name).
func (d PoolTLSDir) KeyFile(name string) string { return filepath.Join(string(d), name+".key") }

// FileName is the name of id's files: the role when the id is the role
// ("gateway"), else role-id ("executor-e1", "operator-alice",
// "executor-enroll").
func FileName(id tlsconfig.Identity) string {
	if id.ID == string(id.Role) {
		return id.ID
	}
	return string(id.Role) + "-" + id.ID
}

// InitPoolCA creates the pool CA in d, or loads the one there.
func (d PoolTLSDir) InitPoolCA(pool string) (*CA, bool, error) {
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return nil, false, err
	}
	certPEM, err1 := os.ReadFile(d.CAFile())
	keyPEM, err2 := os.ReadFile(d.KeyFile("ca"))
	if err1 == nil && err2 == nil {
		ca, err := LoadCA(certPEM, keyPEM)
		return ca, false, err
	}
	ca, err := NewPoolCA("hangar pool " + pool + " internal CA")
	if err != nil {
		return nil, false, err
	}
	if err := WriteKeyPEM(d.KeyFile("ca"), ca.Key); err != nil {
		return nil, false, err
	}
	if err := atomicfile.Write(d.CAFile(), ca.CertPEM, 0o644); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// Issue writes id's certificate and key (0600) in d, unless they exist; it
// reports whether it wrote them. An id of tlsconfig.EnrollmentID writes an
// enrollment CA.
func (d PoolTLSDir) Issue(ca *CA, id tlsconfig.Identity, hosts []string) (bool, error) {
	name := FileName(id)
	if _, err := os.Stat(d.CertFile(name)); err == nil {
		return false, nil
	}
	var certPEM, keyPEM []byte
	var err error
	if id.ID == tlsconfig.EnrollmentID {
		certPEM, keyPEM, err = IssueEnrollmentCA(ca, id.Pool, id.Role)
	} else {
		certPEM, keyPEM, err = IssueRoleCert(ca, id, hosts)
	}
	if err != nil {
		return false, err
	}
	defer clear(keyPEM)
	if err := atomicfile.Write(d.KeyFile(name), keyPEM, 0o600); err != nil {
		return false, err
	}
	if err := atomicfile.Write(d.CertFile(name), certPEM, 0o644); err != nil {
		return false, err
	}
	return true, nil
}
