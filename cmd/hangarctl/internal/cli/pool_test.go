package cli

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/platform/pooltoken"
)

// poolCLI runs cli.Main and returns its exit code, stdout and stderr.
func poolCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func mustPoolCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := poolCLI(t, args...)
	if code != 0 {
		t.Fatalf("hangarctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// poolKeyB64 reads a key file as HANGAR_POOL_PRIVATE_KEY would hold it.
func poolKeyFromB64(t *testing.T, path string) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pooltoken.ParsePrivateKeyB64(base64.StdEncoding.EncodeToString(b))
	if err != nil {
		t.Fatalf("ParsePrivateKeyB64(base64 of %s): %v", filepath.Base(path), err)
	}
	return k
}

// TestPoolFromKeygenAndOpenSSL creates pools from a keygen CSR and from an
// `openssl req -newkey rsa:4096 -nodes` CSR; both tokens parse and match their
// keys, and not each other's.
func TestPoolFromKeygenAndOpenSSL(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "cp")
	mustPoolCLI(t, "ca", "init", "--dir", dir)

	type keyset struct{ name, key, csr string }
	sets := []keyset{{"from-keygen", filepath.Join(tmp, "kg.key"), filepath.Join(tmp, "kg.csr")}}
	out := mustPoolCLI(t, "keygen", "--key", sets[0].key, "--csr", sets[0].csr, "--cn", "my-pool")
	if !strings.Contains(out, "base64 -w0 "+sets[0].key) || !strings.Contains(out, "hangarctl pool create") {
		t.Errorf("keygen does not say what to do next:\n%s", out)
	}
	if fi, _ := os.Stat(sets[0].key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(sets[0].key); !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Error("keygen's key is not PKCS#8 PEM")
	}
	if openssl, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl is not on PATH: skipping the openssl-made CSR (install openssl to run it)")
	} else {
		s := keyset{"from-openssl", filepath.Join(tmp, "os.key"), filepath.Join(tmp, "os.csr")}
		cmd := exec.Command(openssl, "req", "-new", "-newkey", "rsa:4096", "-nodes", "-keyout", s.key, "-out", s.csr, "-subj", "/CN=whatever")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl req: %v\n%s", err, b)
		}
		sets = append(sets, s)
	}

	keys := map[string]*rsa.PrivateKey{}
	tokens := map[string]*pooltoken.Token{}
	for _, s := range sets {
		code, stdout, stderr := poolCLI(t, "pool", "create", "--dir", dir, "--name", s.name, "--csr", s.csr, "--broker", "mqtts://127.0.0.1:8883")
		if code != 0 {
			t.Fatalf("pool create %s: exit %d: %s", s.name, code, stderr)
		}
		if strings.Count(stdout, "\n") != 1 || !strings.HasSuffix(stdout, "\n") {
			t.Fatalf("pool create prints more than the token on stdout: %q", stdout)
		}
		if !strings.Contains(stderr, "HANGAR_TOKEN") {
			t.Errorf("no notes on stderr: %q", stderr)
		}
		tok, err := pooltoken.Parse(stdout)
		if err != nil {
			t.Fatalf("%s: token does not parse: %v", s.name, err)
		}
		if tok.PoolID != s.name {
			t.Fatalf("pool id %q", tok.PoolID)
		}
		key := poolKeyFromB64(t, s.key)
		if err := pooltoken.MatchKey(tok, key); err != nil {
			t.Fatalf("%s: MatchKey: %v", s.name, err)
		}
		if _, err := tok.ClientTLS(key); err != nil {
			t.Fatalf("%s: ClientTLS: %v", s.name, err)
		}
		if again := mustPoolCLI(t, "pool", "token", "--dir", dir, "--name", s.name); again != stdout {
			t.Fatalf("pool token differs from pool create's")
		}
		keys[s.name], tokens[s.name] = key, tok
	}
	other, err := pki.NewRSAKey(2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range tokens {
		if err := pooltoken.MatchKey(tok, other); !errors.Is(err, pooltoken.ErrKeyMismatch) {
			t.Errorf("%s: a different key: %v", name, err)
		}
		for otherName, k := range keys {
			if otherName != name && !errors.Is(pooltoken.MatchKey(tok, k), pooltoken.ErrKeyMismatch) {
				t.Errorf("%s's token matches %s's key", name, otherName)
			}
		}
	}
	list := mustPoolCLI(t, "pool", "list", "--dir", dir)
	for _, s := range sets {
		if !strings.Contains(list, s.name) {
			t.Errorf("pool list lacks %s:\n%s", s.name, list)
		}
	}
}

// TestPoolPKCS1Key checks that an "RSA PRIVATE KEY" (openssl genrsa -traditional
// style) works as HANGAR_POOL_PRIVATE_KEY too.
func TestPoolPKCS1Key(t *testing.T) {
	key, err := pki.NewRSAKey(2048)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	k, err := pooltoken.ParsePrivateKeyB64(base64.StdEncoding.EncodeToString(b))
	if err != nil || !k.Equal(key) {
		t.Fatalf("PKCS#1: %v", err)
	}
}

func TestPoolCommandErrors(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "cp")
	mustPoolCLI(t, "ca", "init", "--dir", dir, "--broker-host", "broker.example", "--broker-host", "10.0.0.1")
	csr := filepath.Join(tmp, "p.csr")
	key, _ := pki.NewRSAKey(2048)
	csrPEM, _ := pki.CreateCSR(key, "x")
	os.WriteFile(csr, csrPEM, 0o644)
	mustPoolCLI(t, "pool", "create", "--dir", dir, "--name", "p1", "--csr", csr, "--broker", "mqtts://broker.example:8883")
	existing := filepath.Join(tmp, "exists")
	os.WriteFile(existing, []byte("keep me"), 0o600)

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"ca init twice", []string{"ca", "init", "--dir", dir}, 1, "already"},
		{"ca init without dir", []string{"ca", "init"}, 2, "--dir"},
		{"ca init bad host", []string{"ca", "init", "--dir", filepath.Join(tmp, "x"), "--broker-host", "h:1"}, 1, "broker host"},
		{"pool create existing", []string{"pool", "create", "--dir", dir, "--name", "p1", "--csr", csr, "--broker", "mqtts://h:1"}, 1, "exists"},
		{"pool create bad name", []string{"pool", "create", "--dir", dir, "--name", "Bad_Name", "--csr", csr, "--broker", "mqtts://h:1"}, 1, "invalid pool name"},
		{"pool create reserved name", []string{"pool", "create", "--dir", dir, "--name", "hangar-x", "--csr", csr, "--broker", "mqtts://h:1"}, 1, "reserved"},
		{"pool create bad broker", []string{"pool", "create", "--dir", dir, "--name", "p2", "--csr", csr, "--broker", "tcp://h:1883"}, 1, "broker"},
		{"pool create missing flags", []string{"pool", "create", "--dir", dir}, 2, "required"},
		{"pool create missing CSR file", []string{"pool", "create", "--dir", dir, "--name", "p2", "--csr", filepath.Join(tmp, "none"), "--broker", "mqtts://h:1"}, 1, "CSR"},
		{"pool create not a dir", []string{"pool", "create", "--dir", tmp, "--name", "p2", "--csr", csr, "--broker", "mqtts://h:1"}, 1, "is not a Hangar control-plane directory: ca.crt is missing; give the directory of `hangarctl ca init` (or the directory `hangarctl dev` printed, which holds control-plane/), or create a control plane there with hangarctl ca init --dir " + tmp},
		{"pool token unknown", []string{"pool", "token", "--dir", dir, "--name", "nope"}, 1, "no such pool"},
		{"pool list not a dir", []string{"pool", "list", "--dir", tmp}, 1, "not a Hangar control-plane directory"},
		{"keygen refuses to overwrite", []string{"keygen", "--key", existing, "--csr", filepath.Join(tmp, "new.csr")}, 1, "already exists"},
		{"keygen same file", []string{"keygen", "--key", existing, "--csr", existing}, 2, "same file"},
		{"stray argument", []string{"pool", "list", "--dir", dir, "extra"}, 2, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := poolCLI(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("stderr %q lacks %q", stderr, tt.stderr)
			}
			if stdout != "" {
				t.Fatalf("stdout %q on failure", stdout)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatal("keygen overwrote a file")
	}
	if _, err := os.Stat(filepath.Join(tmp, "new.csr")); err == nil {
		t.Fatal("keygen wrote the CSR after refusing the key")
	}
}
