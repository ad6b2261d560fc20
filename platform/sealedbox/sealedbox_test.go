package sealedbox

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"google.golang.org/protobuf/proto"
)

// testKeys are generated once per test binary: RSA key generation is slow.
var testKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var ks [2]*rsa.PrivateKey
	for i := range ks {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		ks[i] = k
	}
	return ks
})

func TestRoundTrip(t *testing.T) {
	key := testKeys()[0]
	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{"empty", nil, nil},
		{"small", []byte("hello"), []byte("hangar.run.v1\x00run-1\x00pool")},
		{"no aad", []byte("secret spec"), nil},
		{"large", bytes.Repeat([]byte{0xab}, 1<<20), []byte("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			box, err := Seal(&key.PublicKey, tt.plaintext, tt.aad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(box.GetNonce()) != NonceSize || len(box.GetWrappedKey()) != key.Size() {
				t.Fatalf("box shape: nonce %d, wrapped key %d", len(box.GetNonce()), len(box.GetWrappedKey()))
			}
			got, err := Open(key, box, tt.aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Fatalf("plaintext differs")
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	key := testKeys()[0]
	a, _ := Seal(&key.PublicKey, []byte("same"), nil)
	b, _ := Seal(&key.PublicKey, []byte("same"), nil)
	if bytes.Equal(a.GetNonce(), b.GetNonce()) || bytes.Equal(a.GetWrappedKey(), b.GetWrappedKey()) || bytes.Equal(a.GetCiphertext(), b.GetCiphertext()) {
		t.Fatal("two seals of the same plaintext share key, nonce or ciphertext")
	}
}

// TestFormat checks the wire format against an independent decryption with the
// documented primitives, so the format cannot drift silently.
func TestFormat(t *testing.T) {
	key := testKeys()[0]
	box, err := Seal(&key.PublicKey, []byte("spec"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := rsa.DecryptOAEP(sha256.New(), nil, key, box.GetWrappedKey(), []byte("hangar.sealedbox.v1"))
	if err != nil {
		t.Fatalf("wrapped key is not RSA-OAEP-SHA256 with the documented label: %v", err)
	}
	if len(k) != 32 {
		t.Fatalf("content key is %d bytes", len(k))
	}
	gcm, err := newGCM(k)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := gcm.Open(nil, box.GetNonce(), box.GetCiphertext(), []byte("aad"))
	if err != nil || string(pt) != "spec" {
		t.Fatalf("ciphertext is not AES-256-GCM of the plaintext: %v", err)
	}
}

func TestOpenRejects(t *testing.T) {
	key, other := testKeys()[0], testKeys()[1]
	aad := []byte("hangar.run.v1\x00run-1\x00pool-a")
	secret := []byte("TOP-SECRET-VALUE")
	good, err := Seal(&key.PublicKey, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name  string
		key   *rsa.PrivateKey
		box   func() *runv1.SealedBox
		aad   []byte
		errIs error
	}{
		{"wrong key", other, func() *runv1.SealedBox { return good }, aad, ErrDecrypt},
		{"wrong aad", key, func() *runv1.SealedBox { return good }, []byte("hangar.run.v1\x00run-2\x00pool-a"), ErrDecrypt},
		{"nil aad", key, func() *runv1.SealedBox { return good }, nil, ErrDecrypt},
		{"tampered wrapped key", key, func() *runv1.SealedBox {
			b := proto.Clone(good).(*runv1.SealedBox)
			b.WrappedKey = flip(b.WrappedKey, 10)
			return b
		}, aad, ErrDecrypt},
		{"tampered nonce", key, func() *runv1.SealedBox {
			b := proto.Clone(good).(*runv1.SealedBox)
			b.Nonce = flip(b.Nonce, 0)
			return b
		}, aad, ErrDecrypt},
		{"tampered ciphertext", key, func() *runv1.SealedBox {
			b := proto.Clone(good).(*runv1.SealedBox)
			b.Ciphertext = flip(b.Ciphertext, 3)
			return b
		}, aad, ErrDecrypt},
		{"tampered tag", key, func() *runv1.SealedBox {
			b := proto.Clone(good).(*runv1.SealedBox)
			b.Ciphertext = flip(b.Ciphertext, len(b.Ciphertext)-1)
			return b
		}, aad, ErrDecrypt},
		{"short nonce", key, func() *runv1.SealedBox {
			b := proto.Clone(good).(*runv1.SealedBox)
			b.Nonce = b.Nonce[:11]
			return b
		}, aad, ErrDecrypt},
		{"short wrapped key", key, func() *runv1.SealedBox {
			b := proto.Clone(good).(*runv1.SealedBox)
			b.WrappedKey = b.WrappedKey[1:]
			return b
		}, aad, ErrDecrypt},
		{"truncated ciphertext", key, func() *runv1.SealedBox {
			b := proto.Clone(good).(*runv1.SealedBox)
			b.Ciphertext = b.Ciphertext[:5]
			return b
		}, aad, ErrDecrypt},
		{"empty box", key, func() *runv1.SealedBox { return &runv1.SealedBox{} }, aad, ErrDecrypt},
		{"nil box", key, func() *runv1.SealedBox { return nil }, aad, ErrDecrypt},
		{"nil key", nil, func() *runv1.SealedBox { return good }, aad, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := Open(tt.key, tt.box(), tt.aad)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if pt != nil {
				t.Fatal("Open returned plaintext with an error")
			}
			if !errors.Is(err, tt.errIs) {
				t.Fatalf("error %v is not %v", err, tt.errIs)
			}
			if strings.Contains(err.Error(), string(secret)) {
				t.Fatal("error contains the plaintext")
			}
		})
	}
}

func TestSameMessageForCryptoFailures(t *testing.T) {
	key, other := testKeys()[0], testKeys()[1]
	box, _ := Seal(&key.PublicKey, []byte("x"), []byte("a"))
	_, e1 := Open(other, box, []byte("a")) // RSA unwrap fails
	_, e2 := Open(key, box, []byte("b"))   // GCM fails
	if e1 == nil || e2 == nil || e1.Error() != e2.Error() {
		t.Fatalf("unwrap and GCM failures are distinguishable: %v / %v", e1, e2)
	}
}

func TestSealRejectsBadKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for name, pub := range map[string]*rsa.PublicKey{"nil": nil, "empty": {}, "1024 bits": &small.PublicKey} {
		t.Run(name, func(t *testing.T) {
			if _, err := Seal(pub, []byte("x"), nil); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("got %v, want ErrInvalidKey", err)
			}
		})
	}
}

func TestPublicKeyFingerprint(t *testing.T) {
	a, b := testKeys()[0], testKeys()[1]
	fa := PublicKeyFingerprint(&a.PublicKey)
	if len(fa) != 64 || fa != PublicKeyFingerprint(&a.PublicKey) || fa == PublicKeyFingerprint(&b.PublicKey) {
		t.Fatalf("fingerprint %q is not a stable per-key sha256 hex", fa)
	}
	if PublicKeyFingerprint(nil) != "" {
		t.Fatal("nil key has a fingerprint")
	}
}

// FuzzOpen feeds arbitrary boxes to Open: it must never panic nor accept.
func FuzzOpen(f *testing.F) {
	key := testKeys()[0]
	good, err := Seal(&key.PublicKey, []byte("spec"), []byte("aad"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.GetWrappedKey(), good.GetNonce(), good.GetCiphertext()[1:])
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, wrapped, nonce, ct []byte) {
		box := &runv1.SealedBox{WrappedKey: wrapped, Nonce: nonce, Ciphertext: ct}
		if proto.Equal(box, good) {
			return
		}
		if _, err := Open(key, box, []byte("aad")); err == nil {
			t.Fatal("Open accepted a forged box")
		}
	})
}
