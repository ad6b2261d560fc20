package tlsconfig_test

import (
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
)

func TestParseIdentity(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want tlsconfig.Identity
		err  string
	}{
		{"spiffe://hangar/prod/executor/exec-1", tlsconfig.Identity{Pool: "prod", Role: tlsconfig.RoleExecutor, ID: "exec-1"}, ""},
		{"spiffe://hangar/prod/operator/alice", tlsconfig.Identity{Pool: "prod", Role: tlsconfig.RoleOperator, ID: "alice"}, ""},
		{"spiffe://hangar/prod/root/x", tlsconfig.Identity{}, "unknown role"},
		{"spiffe://other/prod/executor/x", tlsconfig.Identity{}, "want spiffe://hangar"},
		{"spiffe://hangar/prod/executor", tlsconfig.Identity{}, "want spiffe://hangar"},
		{"spiffe://hangar/prod/executor/a/b", tlsconfig.Identity{}, "want spiffe://hangar"},
		{"spiffe://hangar/prod/executor/../x", tlsconfig.Identity{}, "want spiffe://hangar"},
		{"spiffe://hangar/prod/executor/-x", tlsconfig.Identity{}, "id"},
		{"https://hangar/prod/executor/x", tlsconfig.Identity{}, "want spiffe://hangar"},
	} {
		got, err := tlsconfig.ParseIdentity(tt.in)
		if tt.err == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseIdentity(%s) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if err == nil && got.String() != tt.in {
				t.Errorf("round trip %s -> %s", tt.in, got)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParseIdentity(%s) = %v, want error containing %q", tt.in, err, tt.err)
		}
	}
}

func TestLoadPool(t *testing.T) {
	ca, _ := testpki.NewCA("pool CA")
	other, _ := testpki.NewCA("other CA")
	exCert, exKey, _ := ca.IssueRole("p1", "executor", "e1")
	plainCert, plainKey, _ := ca.Issue("no-identity")
	foreignCert, foreignKey, _ := other.IssueRole("p1", "executor", "e1")
	for _, tt := range []struct {
		name      string
		cert, key []byte
		want      tlsconfig.Role
		err       string
	}{
		{"executor", exCert, exKey, tlsconfig.RoleExecutor, ""},
		{"wrong role", exCert, exKey, tlsconfig.RoleGateway, "needs a certificate of role gateway"},
		{"no identity", plainCert, plainKey, tlsconfig.RoleExecutor, "no hangar identity"},
		{"another CA", foreignCert, foreignKey, tlsconfig.RoleExecutor, "pool CA"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tlsconfig.LoadPool(ca.CertPEM(), tt.cert, tt.key, tt.want)
			if tt.err == "" {
				if err != nil || p.Identity.ID != "e1" {
					t.Fatalf("LoadPool = %v, %v", p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestIdentityOfTwoIdentities(t *testing.T) {
	ca, _ := testpki.NewCA("pool CA")
	certPEM, _, _ := ca.IssueRole("p1", "executor", "e1")
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://hangar/p1/operator/e1")
	c.URIs = append(c.URIs, u)
	if _, err := tlsconfig.IdentityOf(c); err == nil {
		t.Fatal("a certificate with two identities was accepted")
	}
}
