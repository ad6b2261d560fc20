package sealedbox

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"
)

func TestWrapUnwrapKey(t *testing.T) {
	priv, other := testKeys()[0], testKeys()[1]
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	wrapped, err := WrapKey(&priv.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnwrapKey(priv, wrapped)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("UnwrapKey = %x, %v", got, err)
	}

	// A key wrapped by Seal unwraps too: the same label and padding.
	box, err := Seal(&priv.PublicKey, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnwrapKey(priv, box.GetWrappedKey()); err != nil {
		t.Fatalf("UnwrapKey of a sealed box's key: %v", err)
	}

	tampered := bytes.Clone(wrapped)
	tampered[10] ^= 1
	for name, tc := range map[string]struct {
		priv    *rsa.PrivateKey
		wrapped []byte
	}{
		"wrong key": {other, wrapped},
		"tampered":  {priv, tampered},
		"truncated": {priv, wrapped[:len(wrapped)-1]},
		"empty":     {priv, nil},
	} {
		if k, err := UnwrapKey(tc.priv, tc.wrapped); !errors.Is(err, ErrDecrypt) || k != nil {
			t.Errorf("%s: UnwrapKey = %x, %v; want ErrDecrypt", name, k, err)
		}
	}
	if _, err := UnwrapKey(nil, wrapped); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("nil private key: %v", err)
	}
	if _, err := WrapKey(&priv.PublicKey, key[:16]); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("short content key: %v", err)
	}
	if _, err := WrapKey(nil, key); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("nil public key: %v", err)
	}
}

func TestParsePublicKey(t *testing.T) {
	priv := testKeys()[0]
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(der)
	if err != nil || !pub.Equal(&priv.PublicKey) {
		t.Fatalf("ParsePublicKey = %v, %v", pub, err)
	}
	if _, err := ParsePublicKey([]byte("junk")); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("junk: %v", err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ = x509.MarshalPKIXPublicKey(&small.PublicKey)
	if _, err := ParsePublicKey(der); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("1024-bit key: %v", err)
	}
}
