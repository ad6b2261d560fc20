package pki

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := NewRSAKey(2048)
	if err != nil {
		panic(err)
	}
	return k
})

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestServerCert(t *testing.T) {
	ca := mustCA(t)
	certPEM, keyPEM, err := IssueServerCert(ca, []string{"broker.example", "10.0.0.7", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyPEM(keyPEM); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"broker.example", "10.0.0.7", "localhost", "127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.CertPool()}); err != nil {
				t.Fatalf("does not verify for %s: %v", host, err)
			}
		})
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: ca.CertPool()}); err == nil {
		t.Fatal("verifies for a host it was not issued for")
	}
	if len(cert.DNSNames) != 2 || len(cert.IPAddresses) != 3 {
		t.Fatalf("SANs not deduplicated: %v %v", cert.DNSNames, cert.IPAddresses)
	}
}

func TestClientCert(t *testing.T) {
	ca := mustCA(t)
	certPEM, _, err := IssueClientCert(ca, "hangar-control-plane")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ParseCertPEM(certPEM)
	if cert.Subject.CommonName != "hangar-control-plane" {
		t.Fatalf("CN %q", cert.Subject.CommonName)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := IssueClientCert(ca, ""); err == nil {
		t.Fatal("empty CN accepted")
	}
}

func TestSignCSR(t *testing.T) {
	ca := mustCA(t)
	key := rsaKey()
	csr, err := CreateCSR(key, "whatever-the-operator-typed")
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := NewECKey()
	ecCSR, _ := CreateCSR(ecKey, "pool")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallCSR, _ := CreateCSR(small, "pool")
	block, _ := pem.Decode(csr)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-5] ^= 0xff
	tamperedCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})

	tests := []struct {
		name string
		csr  []byte
		ok   bool
	}{
		{"RSA CSR", csr, true},
		{"ECDSA CSR", ecCSR, false},
		{"1024-bit CSR", smallCSR, false},
		{"tampered signature", tamperedCSR, false},
		{"not PEM", []byte("hello"), false},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), false},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, err := SignCSR(ca, tt.csr, "pool-a", 0)
			if !tt.ok {
				if !errors.Is(err, ErrInvalidCSR) {
					t.Fatalf("got %v, want ErrInvalidCSR", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cert, err := ParseCertPEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != "pool-a" {
				t.Fatalf("CN %q, want the pool id", cert.Subject.CommonName)
			}
			if !cert.PublicKey.(*rsa.PublicKey).Equal(&key.PublicKey) {
				t.Fatal("certificate is not for the CSR's key")
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatal(err)
			}
			if d := cert.NotAfter.Sub(time.Now()); d < PoolValidity-time.Hour || d > PoolValidity {
				t.Fatalf("validity %v", d)
			}
		})
	}
}

func TestKeysAndFiles(t *testing.T) {
	if _, err := NewRSAKey(1024); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("NewRSAKey(1024): %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "k.pem")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPEM(path, rsaKey()); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	b, _ := os.ReadFile(path)
	if block, _ := pem.Decode(b); block == nil || block.Type != "PRIVATE KEY" {
		t.Fatal("not a PKCS#8 PEM")
	}
	k, err := ParseKeyPEM(b)
	if err != nil || !k.(*rsa.PrivateKey).Equal(rsaKey()) {
		t.Fatalf("round trip: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	for _, bad := range [][]byte{nil, []byte("x"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})} {
		if _, err := ParseKeyPEM(bad); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("ParseKeyPEM(%q): %v", bad, err)
		}
	}
}

func TestLoadCA(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	keyPEM, _ := EncodeKeyPEM(ca.Key)
	otherKeyPEM, _ := EncodeKeyPEM(other.Key)
	loaded, err := LoadCA(ca.CertPEM, keyPEM)
	if err != nil || !loaded.Cert.Equal(ca.Cert) {
		t.Fatalf("LoadCA: %v", err)
	}
	if _, err := LoadCA(ca.CertPEM, otherKeyPEM); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("mismatched key: %v", err)
	}
	leaf, _, _ := IssueClientCert(ca, "x")
	if _, err := LoadCA(leaf, keyPEM); err == nil {
		t.Fatal("a leaf certificate loaded as a CA")
	}
}
