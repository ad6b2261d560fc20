package runenvelope

import (
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"
)

// benchPoolKey4096 is generated once, on first use.
var benchPoolKey4096 = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		panic(err)
	}
	return k
})

// BenchmarkVerifyDecrypt measures a gateway's whole check of one envelope with an
// RSA-4096 pool key. The RSA private-key operation dominates: compare with
// sealedbox's BenchmarkDecryptOAEP4096.
func BenchmarkVerifyDecrypt(b *testing.B) {
	f := fixtures()
	p := testParams(f)
	p.PoolKey = &benchPoolKey4096().PublicKey
	payload := mustSeal(b, p)
	o := testOpener(f)
	o.PoolKey = benchPoolKey4096()
	b.ReportAllocs()
	for b.Loop() {
		v, err := o.Verify(payload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := o.Decrypt(v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is steps 1-5 alone (no RSA): the cost of refusing bad input.
func BenchmarkVerify(b *testing.B) {
	f := fixtures()
	payload := mustSeal(b, testParams(f))
	o := testOpener(f)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.Verify(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeal4096 is the control plane's side.
func BenchmarkSeal4096(b *testing.B) {
	f := fixtures()
	p := testParams(f)
	p.PoolKey = &benchPoolKey4096().PublicKey
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal(p); err != nil {
			b.Fatal(err)
		}
	}
}
