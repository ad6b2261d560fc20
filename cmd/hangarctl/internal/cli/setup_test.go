package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/platform/pooltoken"
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
	// A second run keeps the identity.
	if out, code := run("setup", "--dir", dir, "--broker", "mqtts://broker:8883"); code != 0 || !strings.Contains(out, "already set up") {
		t.Fatalf("second setup: %d %s", code, out)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "pool", "token"))
	if !bytes.Equal(again, tokenB) {
		t.Fatal("a second setup changed the token")
	}
	if _, code := run("setup", "--dir", dir); code != 2 {
		t.Fatal("missing --broker must be a usage error")
	}
}
