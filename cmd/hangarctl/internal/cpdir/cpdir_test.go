package cpdir

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/platform/pooltoken"
)

var poolKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := pki.NewRSAKey(2048)
	if err != nil {
		panic(err)
	}
	return k
})

func poolCSR(t *testing.T) []byte {
	t.Helper()
	csr, err := pki.CreateCSR(poolKey(), "ignored")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func mustInit(t *testing.T) *Dir {
	t.Helper()
	d, err := Init(filepath.Join(t.TempDir(), "cp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestInitLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp")
	d, err := Init(path, []string{"broker.example", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		".": 0o700, "ca.crt": 0o644, "ca.key": 0o600, "broker.crt": 0o644, "broker.key": 0o600,
		"control-plane.crt": 0o644, "control-plane.key": 0o600, "signing.key": 0o600, "signing.pub": 0o644, "pools": 0o700,
	}
	for name, mode := range want {
		fi, err := os.Stat(filepath.Join(path, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	entries, _ := os.ReadDir(path)
	if len(entries) != len(want)-1 {
		t.Errorf("unexpected files: %v", entries)
	}
	cert, err := pki.ParseCertPEM(mustRead(t, d.BrokerCertFile()))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"broker.example", "10.1.2.3", "localhost", "127.0.0.1", "::1"} {
		if err := cert.VerifyHostname(h); err != nil {
			t.Errorf("broker certificate: %v", err)
		}
	}
	sk, err := d.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if !sk.Public().(ed25519.PublicKey).Equal(d.VerifyKey()) {
		t.Fatal("signing key and verify key differ")
	}
	if d.CAFile() != filepath.Join(path, "ca.crt") || d.BrokerKeyFile() != filepath.Join(path, "broker.key") {
		t.Fatal("file paths")
	}
	if string(d.CAPEM()) != string(mustRead(t, d.CAFile())) {
		t.Fatal("CAPEM differs from ca.crt")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInitRefuses(t *testing.T) {
	d := mustInit(t)
	_, err := Init(d.Path(), nil)
	if !errors.Is(err, ErrAlreadyInitialized) || !strings.Contains(err.Error(), "already") {
		t.Fatalf("second Init: %v", err)
	}
	// An existing empty directory is fine.
	empty := t.TempDir()
	if _, err := Init(empty, nil); err != nil {
		t.Fatalf("Init of an empty dir: %v", err)
	}
	for _, h := range []string{"", "host:8883", "a b", "a/b"} {
		if _, err := Init(filepath.Join(t.TempDir(), "x"), []string{h}); err == nil {
			t.Errorf("broker host %q accepted", h)
		}
	}
}

func TestOpen(t *testing.T) {
	d := mustInit(t)
	if _, err := Open(d.Path()); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for name, path := range map[string]string{"missing": filepath.Join(tmp, "nope"), "empty": tmp, "file": file} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(path)
			if !errors.Is(err, ErrNotInitialized) {
				t.Fatalf("got %v", err)
			}
			for _, want := range []string{path + " is not a Hangar control-plane directory: ", "hangarctl dev", "hangarctl ca init --dir " + path} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("message %q lacks %q", err, want)
				}
			}
		})
	}
	t.Run("the directory of hangarctl dev", func(t *testing.T) {
		devDir := t.TempDir()
		cp, err := Init(filepath.Join(devDir, DevSubdir), []string{"localhost"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Open(devDir)
		if err != nil || got.Path() != cp.Path() {
			t.Fatalf("Open(dev dir) = %v, %v; want the control plane in %s", got, err, cp.Path())
		}
	})
	t.Run("mismatched signing key", func(t *testing.T) {
		other := mustInit(t)
		os.WriteFile(filepath.Join(d.Path(), "signing.pub"), mustRead(t, filepath.Join(other.Path(), "signing.pub")), 0o644)
		if _, err := Open(d.Path()); err == nil || strings.Contains(err.Error(), "PRIVATE") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestCreatePool(t *testing.T) {
	d := mustInit(t)
	csr := poolCSR(t)
	p, token, err := d.CreatePool("pool-a", csr, "mqtts://broker.example:8883")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "pool-a" || p.ID != "pool-a" || !p.PublicKey.Equal(&poolKey().PublicKey) {
		t.Fatalf("pool = %+v", p)
	}
	tok, err := pooltoken.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	if tok.PoolID != "pool-a" || tok.Broker != "mqtts://broker.example:8883" || tok.BrokerCAPEM != string(d.CAPEM()) {
		t.Fatalf("token = %+v", tok)
	}
	if vk, _ := tok.VerifyKey(); !vk.Equal(d.VerifyKey()) {
		t.Fatal("token verification key is not the directory's")
	}
	if err := pooltoken.MatchKey(tok, poolKey()); err != nil {
		t.Fatal(err)
	}
	again, err := d.Token("pool-a")
	if err != nil || again != token {
		t.Fatalf("Token differs: %v", err)
	}
	got, err := d.Pool("pool-a")
	if err != nil || !got.PublicKey.Equal(p.PublicKey) || got.CreatedAt.IsZero() {
		t.Fatalf("Pool: %v", err)
	}
	if _, _, err := d.CreatePool("pool-b", csr, "mqtts://127.0.0.1:8883"); err != nil {
		t.Fatal(err)
	}
	pools, err := d.Pools()
	if err != nil || len(pools) != 2 || pools[0].Name != "pool-a" || pools[1].Name != "pool-b" {
		t.Fatalf("Pools = %v, %v", pools, err)
	}
	if _, err := d.Pool("nope"); !errors.Is(err, ErrPoolNotFound) {
		t.Fatalf("missing pool: %v", err)
	}
	if _, err := d.Token("nope"); !errors.Is(err, ErrPoolNotFound) {
		t.Fatalf("missing pool token: %v", err)
	}

	tests := []struct {
		name, pool, broker string
		csr                []byte
		errIs              error
	}{
		{"existing", "pool-a", "mqtts://h:1", csr, ErrPoolExists},
		{"uppercase", "Pool", "mqtts://h:1", csr, ErrInvalidPoolName},
		{"empty", "", "mqtts://h:1", csr, ErrInvalidPoolName},
		{"leading dash", "-pool", "mqtts://h:1", csr, ErrInvalidPoolName},
		{"reserved prefix", "hangar-pool", "mqtts://h:1", csr, ErrInvalidPoolName},
		{"too long", strings.Repeat("a", 64), "mqtts://h:1", csr, ErrInvalidPoolName},
		{"slash", "a/b", "mqtts://h:1", csr, ErrInvalidPoolName},
		{"underscore", "a_b", "mqtts://h:1", csr, ErrInvalidPoolName},
		{"bad broker", "pool-c", "tcp://h:1883", csr, pooltoken.ErrInvalidToken},
		{"broker without port", "pool-c", "mqtts://h", csr, pooltoken.ErrInvalidToken},
		{"bad CSR", "pool-c", "mqtts://h:1", []byte("nope"), pki.ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := d.CreatePool(tt.pool, tt.csr, tt.broker)
			if !errors.Is(err, tt.errIs) {
				t.Fatalf("got %v, want %v", err, tt.errIs)
			}
		})
	}
	if _, err := d.Pool("pool-c"); !errors.Is(err, ErrPoolNotFound) {
		t.Fatal("a failed CreatePool left a record")
	}
	if _, _, err := d.CreatePool(strings.Repeat("a", 63), csr, "mqtts://h:1"); err != nil {
		t.Fatalf("63-character name: %v", err)
	}
}

func TestCreatePoolConcurrent(t *testing.T) {
	d := mustInit(t)
	csr := poolCSR(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Go(func() {
			if _, _, err := d.CreatePool("same", csr, "mqtts://h:1"); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if !errors.Is(err, ErrPoolExists) {
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d creations succeeded, want 1", ok)
	}
}

// TestTLS runs real mutual-TLS handshakes against BrokerTLS: the control plane's
// client and a pool's client (from its token) are accepted, and the broker sees
// their CNs.
func TestTLS(t *testing.T) {
	d := mustInit(t)
	_, token, err := d.CreatePool("pool-a", poolCSR(t), "mqtts://127.0.0.1:8883")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := pooltoken.Parse(token)
	poolTLS, err := tok.ClientTLS(poolKey())
	if err != nil {
		t.Fatal(err)
	}
	cpTLS, err := d.ClientTLS("localhost")
	if err != nil {
		t.Fatal(err)
	}
	foreign := mustInit(t)
	foreignTLS, _ := foreign.ClientTLS("localhost")
	brokerTLS, err := d.BrokerTLS()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		client *tls.Config
		cn     string
	}{
		{"control plane", cpTLS, ControlPlaneCN},
		{"pool", poolTLS, "pool-a"},
		{"another control plane's client", foreignTLS, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cn, err := handshake(brokerTLS, tt.client)
			if tt.cn == "" {
				if err == nil {
					t.Fatal("a client from another CA was accepted")
				}
				return
			}
			if err != nil || cn != tt.cn {
				t.Fatalf("cn %q, err %v", cn, err)
			}
		})
	}
}

func handshake(server, client *tls.Config) (string, error) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	type result struct {
		cn  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		srv := tls.Server(s, server)
		err := srv.Handshake()
		if err != nil {
			s.Close()
			done <- result{err: err}
			return
		}
		done <- result{cn: srv.ConnectionState().PeerCertificates[0].Subject.CommonName}
	}()
	cl := tls.Client(c, client)
	cerr := cl.Handshake()
	if cerr != nil {
		c.Close()
	}
	r := <-done
	if r.err != nil {
		return "", r.err
	}
	return r.cn, cerr
}
