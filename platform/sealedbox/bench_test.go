package sealedbox

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"testing"
)

// benchKey4096 is generated once, on first use: RSA-4096 generation takes seconds.
var benchKey4096 = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		panic(err)
	}
	return k
})

// BenchmarkOpen4096 opens a 4 KiB box with an RSA-4096 key. Compare it with
// BenchmarkDecryptOAEP4096, the bare private-key operation: the physical floor.
func BenchmarkOpen4096(b *testing.B) {
	key := benchKey4096()
	aad := []byte("hangar.run.v1\x00run-1\x00pool")
	box, err := Seal(&key.PublicKey, make([]byte, 4096), aad)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(key, box, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecryptOAEP4096 is rsa.DecryptOAEP alone on a 32-byte key.
func BenchmarkDecryptOAEP4096(b *testing.B) {
	key := benchKey4096()
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, make([]byte, 32), oaepLabel)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rsa.DecryptOAEP(sha256.New(), nil, key, wrapped, oaepLabel); err != nil {
			b.Fatal(err)
		}
	}
}
