package pooltoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func TestParsePrivateKeyB64(t *testing.T) {
	f := fixtures()
	pkcs8, err := x509.MarshalPKCS8PrivateKey(f.poolKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8PEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(f.poolKey)})
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	// wrapped is base64 -w76 output: several lines.
	wrapped := func(s string) string {
		var b strings.Builder
		for len(s) > 76 {
			b.WriteString(s[:76] + "\n")
			s = s[76:]
		}
		return b.String() + s + "\n"
	}
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8[:len(pkcs8)-40]})
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"PKCS#8", b64(pkcs8PEM), true},
		{"PKCS#1", b64(pkcs1PEM), true},
		{"with whitespace", "\n " + b64(pkcs8PEM) + " \n", true},
		{"wrapped lines", wrapped(b64(pkcs8PEM)), true},
		{"empty", "", false},
		{"raw PEM", string(pkcs8PEM), false},
		{"not base64", "%%%not base64%%%", false},
		{"base64 of garbage", b64([]byte("hello")), false},
		{"EC key", b64(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})), false},
		{"1024-bit key", b64(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)})), false},
		{"encrypted PKCS#8", b64(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: pkcs8})), false},
		{"encrypted legacy", b64(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: pkcs8})), false},
		{"certificate", b64([]byte(f.poolPEM)), false},
		{"truncated key", b64(corrupt), false},
		{"PKCS#1 labelled PKCS#8", b64(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(f.poolKey)})), false},
	}
	secrets := []string{b64(pkcs8PEM)[40:80], b64(pkcs8)[40:80], f.poolKey.D.String()[:20]}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParsePrivateKeyB64(tt.in)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if !k.Equal(f.poolKey) {
					t.Fatal("different key")
				}
				return
			}
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("got %v, want ErrInvalidKey", err)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatal("error contains key material")
				}
			}
		})
	}
}
