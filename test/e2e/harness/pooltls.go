package harness

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

// PoolTLS is a pool's internal PKI made the way the README says: `hangarctl
// pki init`, then `hangarctl pki issue` per service (ADR 0008).
type PoolTLS struct {
	Dir, Pool string
	cp        *ControlPlane
}

// NewPoolTLS runs `hangarctl pki init` for pool in a fresh directory.
func (cp *ControlPlane) NewPoolTLS(t testing.TB, pool string) *PoolTLS {
	t.Helper()
	p := &PoolTLS{Dir: filepath.Join(t.TempDir(), "pool-tls"), Pool: pool, cp: cp}
	if r := cp.Run(t, "pki", "init", "--dir", p.Dir, "--pool", pool); r.Code != 0 {
		t.Fatalf("hangarctl pki init: %s", r)
	}
	return p
}

// CAFile is the pool CA certificate.
func (p *PoolTLS) CAFile() string { return filepath.Join(p.Dir, "ca.crt") }

// Issue runs `hangarctl pki issue` for role and id (once per pair) and
// returns the certificate and key files.
func (p *PoolTLS) Issue(t testing.TB, role, id string) (certFile, keyFile string) {
	t.Helper()
	name := role
	if id != role {
		name = role + "-" + id
	}
	certFile, keyFile = filepath.Join(p.Dir, name+".crt"), filepath.Join(p.Dir, name+".key")
	if fileExists(certFile) {
		return certFile, keyFile
	}
	if r := p.cp.Run(t, "pki", "issue", "--dir", p.Dir, "--role", role, "--id", id); r.Code != 0 {
		t.Fatalf("hangarctl pki issue --role %s --id %s: %s", role, id, r)
	}
	return certFile, keyFile
}

// Env is the HANGAR_TLS_* environment of a service with that identity.
func (p *PoolTLS) Env(t testing.TB, role, id string) []string {
	t.Helper()
	cert, key := p.Issue(t, role, id)
	return []string{"HANGAR_TLS_CA=" + p.CAFile(), "HANGAR_TLS_CERT=" + cert, "HANGAR_TLS_KEY=" + key}
}

// OperatorArgs are the `hangarctl run submit --follow` flags of operator id.
func (p *PoolTLS) OperatorArgs(t testing.TB, id string) []string {
	t.Helper()
	cert, key := p.Issue(t, "operator", id)
	return []string{"--tls-ca", p.CAFile(), "--tls-cert", cert, "--tls-key", key}
}

// ClientTLS is a client configuration presenting the certificate of role
// and id and expecting a server of role server, as Hangar's own clients do.
func (p *PoolTLS) ClientTLS(t testing.TB, role, id, server string) *tls.Config {
	t.Helper()
	cert, key := p.Issue(t, role, id)
	pool, err := tlsconfig.LoadPoolFiles(p.CAFile(), cert, key, tlsconfig.Role(role))
	if err != nil {
		t.Fatal(err)
	}
	return pool.ClientConfig(tlsconfig.Role(server))
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}
