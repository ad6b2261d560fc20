package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/platform/pooltoken"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

func TestSetupIsIdempotentAndWritesWhatTheGatewayReads(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), args, &out, &errb)
		return out.String() + errb.String(), code
	}
	out, code := run("setup", "--dir", dir, "--broker", "mqtts://broker:8883", "--broker-host", "broker", "--pool", "p1")
	if code != 0 {
		t.Fatalf("setup: %d %s", code, out)
	}
	tokenB, _ := os.ReadFile(filepath.Join(dir, "pool", "token"))
	keyB, _ := os.ReadFile(filepath.Join(dir, "pool", "pool.key.b64"))
	tok, err := pooltoken.Parse(strings.TrimSpace(string(tokenB)))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pooltoken.ParsePrivateKeyB64(string(keyB))
	if err != nil {
		t.Fatal(err)
	}
	if err := pooltoken.MatchKey(tok, key); err != nil {
		t.Fatalf("the written key does not match the token: %v", err)
	}
	if tok.PoolID != "p1" || tok.Broker != "mqtts://broker:8883" {
		t.Fatalf("token = %+v", tok)
	}
	for _, f := range []string{"pool/token", "pool/pool.key.b64", "pool/pool.key", "control-plane/ca.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s: %v, mode %v: private files must not be readable by others", f, err, st.Mode())
		}
	}
	// The pool-internal PKI: each service's directory loads as its role.
	for _, svc := range setupServices {
		d := filepath.Join(dir, "tls", svc.dir)
		name := svc.dir
		if svc.id != svc.dir {
			name = svc.dir + "-" + svc.id
		}
		ca, cert, key := filepath.Join(d, "ca.crt"), filepath.Join(d, name+".crt"), filepath.Join(d, name+".key")
		var p *tlsconfig.Pool
		var err error
		if svc.id == tlsconfig.EnrollmentID {
			p, err = tlsconfig.EnrollFiles(ca, cert, key, "node-1", svc.role)
		} else {
			p, err = tlsconfig.LoadPoolFiles(ca, cert, key, svc.role)
		}
		if err != nil {
			t.Fatalf("%s: %v", svc.dir, err)
		}
		if p.Identity.Pool != "p1" || p.Identity.Role != svc.role {
			t.Fatalf("%s: identity %v", svc.dir, p.Identity)
		}
		if st, err := os.Stat(key); err != nil || st.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s: key %v, mode %v", svc.dir, err, st.Mode())
		}
		if _, err := os.Stat(filepath.Join(d, "ca.key")); err == nil {
			t.Fatalf("%s holds the pool CA's key", d)
		}
	}
	caCert, _ := os.ReadFile(filepath.Join(dir, "tls", "ca", "ca.crt"))
	// A second run keeps the identity.
	if out, code := run("setup", "--dir", dir, "--broker", "mqtts://broker:8883"); code != 0 || !strings.Contains(out, "already set up") {
		t.Fatalf("second setup: %d %s", code, out)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "pool", "token"))
	if !bytes.Equal(again, tokenB) {
		t.Fatal("a second setup changed the token")
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "tls", "ca", "ca.crt")); !bytes.Equal(again, caCert) {
		t.Fatal("a second setup changed the pool CA")
	}
	if _, code := run("setup", "--dir", dir); code != 2 {
		t.Fatal("missing --broker must be a usage error")
	}
}
