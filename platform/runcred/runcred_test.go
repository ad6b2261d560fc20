package runcred

import (
	"crypto"
	"errors"
	"strings"
	"testing"
	"time"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
	"google.golang.org/protobuf/proto"
)

type fixture struct {
	ca, other *testpki.CA
	gateway   *tlsconfig.Pool
	logship   *tlsconfig.Pool
}

func pool(t *testing.T, ca *testpki.CA, poolName, role, id string) *tlsconfig.Pool {
	t.Helper()
	cert, key, err := ca.IssueRole(poolName, role, id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tlsconfig.LoadPool(ca.CertPEM(), cert, key, tlsconfig.Role(role))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := testpki.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, other: other, gateway: pool(t, ca, "p1", "gateway", "gw-1"), logship: pool(t, ca, "p1", "logship", "ls")}
}

func issuer(t *testing.T, p *tlsconfig.Pool, ttl time.Duration, now time.Time) *Issuer {
	t.Helper()
	is, err := NewIssuer(p, ttl)
	if err != nil {
		t.Fatal(err)
	}
	is.now = func() time.Time { return now }
	return is
}

var exec1 = tlsconfig.Identity{Pool: "p1", Role: tlsconfig.RoleExecutor, ID: "exec-1"}

func TestCheck(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	good := issuer(t, f.gateway, time.Hour, now)
	cred := func(is *Issuer, run string, epoch uint64, ex string) *logsv1.RunCredential {
		c, err := is.Issue(run, epoch, ex)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	forged := cred(good, "run-1", 1, "exec-1")
	forged.Claims = append([]byte(nil), forged.Claims...)
	var cl logsv1.RunClaims
	_ = proto.Unmarshal(forged.Claims, &cl)
	cl.ExecutorId = "exec-2"
	forged.Claims, _ = proto.Marshal(&cl)

	otherGW := pool(t, f.other, "p1", "gateway", "gw-1")
	otherPoolGW := pool(t, f.ca, "p2", "gateway", "gw-1")
	stolenChain := cred(good, "run-1", 1, "exec-1")
	stolenChain.GatewayChain = cred(issuer(t, otherGW, time.Hour, now), "run-1", 1, "exec-1").GatewayChain

	cases := []struct {
		name   string
		cred   *logsv1.RunCredential
		logID  string
		caller tlsconfig.Identity
		want   string // "" = accepted
	}{
		{"valid", cred(good, "run-1", 1, "exec-1"), "run-1", exec1, ""},
		{"resumed log of the run", cred(good, "run-1", 1, "exec-1"), "run-1-resumed", exec1, ""},
		{"no credential", nil, "run-1", exec1, "no run credential"},
		{"expired", cred(issuer(t, f.gateway, time.Minute, now.Add(-2*time.Minute)), "run-1", 1, "exec-1"), "run-1", exec1, "expired"},
		{"wrong run", cred(good, "run-2", 1, "exec-1"), "run-1", exec1, `issued for run "run-2"`},
		{"wrong executor", cred(good, "run-1", 1, "exec-2"), "run-1", exec1, `issued to executor "exec-2"`},
		{"executor cert of another id", cred(good, "run-1", 1, "exec-1"), "run-1", tlsconfig.Identity{Pool: "p1", Role: tlsconfig.RoleExecutor, ID: "exec-9"}, "issued to executor"},
		{"caller is no executor", cred(good, "run-1", 1, "exec-1"), "run-1", tlsconfig.Identity{Pool: "p1", Role: tlsconfig.RoleOperator, ID: "exec-1"}, "not an executor"},
		{"forged claims", forged, "run-1", tlsconfig.Identity{Pool: "p1", Role: tlsconfig.RoleExecutor, ID: "exec-2"}, "bad signature"},
		{"gateway of another CA", cred(issuer(t, otherGW, time.Hour, now), "run-1", 1, "exec-1"), "run-1", exec1, "pool CA"},
		{"chain swapped for another CA's", stolenChain, "run-1", exec1, "pool CA"},
		{"gateway of another pool", cred(issuer(t, otherPoolGW, time.Hour, now), "run-1", 1, "exec-1"), "run-1", exec1, "not a gateway of pool p1"},
		{"signed by a non-gateway certificate", signedBy(t, f.ca, "executor", "run-1", 1, "exec-1", now), "run-1", exec1, "not a gateway"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewChecker(f.logship)
			_, err := c.Check(tc.cred, tc.logID, tc.caller)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrRefused containing %q", err, tc.want)
			}
		})
	}
}

// signedBy signs claims with a certificate of any role, bypassing the
// Issuer's own role check: what a stolen executor key could produce.
func signedBy(t *testing.T, ca *testpki.CA, role, run string, epoch uint64, ex string, now time.Time) *logsv1.RunCredential {
	t.Helper()
	p := pool(t, ca, "p1", role, "signer")
	is := &Issuer{signer: mustSigner(t, p), chain: p.Cert.Certificate, pool: "p1", ttl: time.Hour, now: func() time.Time { return now }}
	c, err := is.Issue(run, epoch, ex)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustSigner(t *testing.T, p *tlsconfig.Pool) crypto.Signer {
	t.Helper()
	s, ok := p.Cert.PrivateKey.(crypto.Signer)
	if !ok {
		t.Fatalf("key %T", p.Cert.PrivateKey)
	}
	return s
}

func TestEpochs(t *testing.T) {
	f := newFixture(t)
	is := issuer(t, f.gateway, time.Hour, time.Now())
	c := NewChecker(f.logship)
	e1, _ := is.Issue("run-1", 1, "exec-1")
	e2, _ := is.Issue("run-1", 2, "exec-2")
	g1, err := c.Check(e1, "run-1", exec1)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Current(g1) {
		t.Fatal("epoch 1 not current after its Open")
	}
	exec2 := tlsconfig.Identity{Pool: "p1", Role: tlsconfig.RoleExecutor, ID: "exec-2"}
	g2, err := c.Check(e2, "run-1", exec2)
	if err != nil {
		t.Fatal(err)
	}
	if c.Current(g1) || !c.Current(g2) {
		t.Fatal("after epoch 2 opened, epoch 1 must no longer be current, epoch 2 must")
	}
	if _, err := c.Check(e1, "run-1", exec1); err == nil || !strings.Contains(err.Error(), "epoch 1") {
		t.Fatalf("reopen under epoch 1 after epoch 2: err = %v, want refused naming the epoch", err)
	}
	// Another run is not affected.
	o1, _ := is.Issue("run-2", 1, "exec-1")
	if _, err := c.Check(o1, "run-2", exec1); err != nil {
		t.Fatal(err)
	}
}

func TestResumeLogID(t *testing.T) {
	if got := ResumeLogID("r1"); got != "r1-resumed" {
		t.Fatal(got)
	}
	long := strings.Repeat("a", 64)
	if got := ResumeLogID(long); len(got) != 64 || !strings.HasSuffix(got, "-resumed") {
		t.Fatal(got)
	}
}
