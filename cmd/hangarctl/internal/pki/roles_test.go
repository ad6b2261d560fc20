package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

func TestRoleCerts(t *testing.T) {
	ca, err := NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range tlsconfig.Roles {
		id := tlsconfig.Identity{Pool: "prod", Role: role, ID: "x1"}
		certPEM, keyPEM, err := IssueRoleCert(ca, id, []string{"svc", "10.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		p, err := tlsconfig.LoadPool(ca.CertPEM, certPEM, keyPEM, role)
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		if p.Identity != id {
			t.Errorf("%s: identity %v", role, p.Identity)
		}
		other := tlsconfig.RoleOperator
		if role == other {
			other = tlsconfig.RoleExecutor
		}
		if _, err := tlsconfig.LoadPool(ca.CertPEM, certPEM, keyPEM, other); err == nil {
			t.Errorf("a %s certificate loaded as %s", role, other)
		}
	}
	if _, _, err := IssueRoleCert(ca, tlsconfig.Identity{Pool: "prod", Role: tlsconfig.RoleExecutor, ID: "enroll"}, nil); err == nil {
		t.Error("issued a leaf with the reserved id enroll")
	}
}

func TestEnrollment(t *testing.T) {
	ca, err := NewPoolCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	icPEM, ikPEM, err := IssueEnrollmentCA(ca, "prod", tlsconfig.RoleExecutor)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tlsconfig.Enroll(ca.CertPEM, icPEM, ikPEM, "host-abc", tlsconfig.RoleExecutor)
	if err != nil {
		t.Fatal(err)
	}
	if want := (tlsconfig.Identity{Pool: "prod", Role: tlsconfig.RoleExecutor, ID: "host-abc"}); p.Identity != want {
		t.Fatalf("enrolled %v, want %v", p.Identity, want)
	}
	if _, err := tlsconfig.Enroll(ca.CertPEM, icPEM, ikPEM, "host-abc", tlsconfig.RoleOperator); err == nil {
		t.Fatal("an executor enrollment CA enrolled an operator")
	}

	// A leaf the executor enrollment CA signs for another role (what a
	// stolen enrollment key could mint) does not verify.
	ic, _ := ParseCertPEM(icPEM)
	ik, _ := ParseKeyPEM(ikPEM)
	for _, forged := range []string{"spiffe://hangar/prod/operator/mallory", "spiffe://hangar/other/executor/e1", "spiffe://hangar/prod/gateway/g"} {
		u, _ := url.Parse(forged)
		key, _ := NewECKey()
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mallory"},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u},
		}, ic, &key.PublicKey, ik)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, _ := EncodeKeyPEM(key)
		chain := append(EncodeCertPEM(der), icPEM...)
		id, _ := tlsconfig.ParseIdentity(forged)
		if _, err := tlsconfig.LoadPool(ca.CertPEM, chain, keyPEM, id.Role); err == nil || !strings.Contains(err.Error(), "may not issue") {
			t.Errorf("%s minted by the executor enrollment CA: err = %v, want refused", forged, err)
		}
	}
	// The enrollment CA itself is no identity.
	if _, err := tlsconfig.LoadPool(ca.CertPEM, icPEM, ikPEM, tlsconfig.RoleExecutor); err == nil {
		t.Error("the enrollment CA loaded as an executor identity")
	}
}

func TestPoolTLSDir(t *testing.T) {
	d := PoolTLSDir(t.TempDir())
	ca, created, err := d.InitPoolCA("prod")
	if err != nil || !created {
		t.Fatal(created, err)
	}
	ca2, created, err := d.InitPoolCA("prod")
	if err != nil || created || !ca2.Cert.Equal(ca.Cert) {
		t.Fatalf("second init: created=%v err=%v (must load the same CA)", created, err)
	}
	id := tlsconfig.Identity{Pool: "prod", Role: tlsconfig.RoleGateway, ID: "gateway"}
	if wrote, err := d.Issue(ca, id, nil); err != nil || !wrote {
		t.Fatal(wrote, err)
	}
	if wrote, err := d.Issue(ca, id, nil); err != nil || wrote {
		t.Fatal("second issue rewrote the certificate", err)
	}
	if _, err := tlsconfig.LoadPoolFiles(d.CAFile(), d.CertFile("gateway"), d.KeyFile("gateway"), tlsconfig.RoleGateway); err != nil {
		t.Fatal(err)
	}
}
