package cli

import (
	"crypto/rsa"
	"os"
	"path/filepath"
	"testing"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
)

// TestKeygenForce checks that --force replaces both files with a new key pair.
func TestKeygenForce(t *testing.T) {
	tmp := t.TempDir()
	key, csr := filepath.Join(tmp, "k"), filepath.Join(tmp, "c")
	os.WriteFile(key, []byte("old"), 0o644)
	os.WriteFile(csr, []byte("old"), 0o644)
	mustPoolCLI(t, "keygen", "--key", key, "--csr", csr, "--force")
	kb, _ := os.ReadFile(key)
	k, err := pki.ParseKeyPEM(kb)
	if err != nil {
		t.Fatal(err)
	}
	rk := k.(*rsa.PrivateKey)
	if rk.N.BitLen() != 4096 {
		t.Fatalf("%d bits", rk.N.BitLen())
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v after --force", fi.Mode().Perm())
	}
	cb, _ := os.ReadFile(csr)
	ca, err := pki.NewCA("t")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := pki.SignCSR(ca, cb, "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := pki.ParseCertPEM(certPEM)
	if !cert.PublicKey.(*rsa.PublicKey).Equal(&rk.PublicKey) {
		t.Fatal("the CSR is not for the key")
	}
}
