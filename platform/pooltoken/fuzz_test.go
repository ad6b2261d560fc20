package pooltoken

import (
	"encoding/base64"
	"testing"
)

// FuzzParse feeds arbitrary strings to Parse: it must not panic, and whatever it
// accepts must encode and parse back to the same token.
func FuzzParse(f *testing.F) {
	fx := fixtures()
	good, err := goodToken(fx).Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"version":1}`)))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := tok.Encode()
		if err != nil {
			t.Fatalf("accepted token does not encode: %v", err)
		}
		tok2, err := Parse(again)
		if err != nil || *tok2 != *tok {
			t.Fatalf("re-encoded token differs: %v", err)
		}
	})
}

// FuzzParsePrivateKeyB64 checks that arbitrary input never panics.
func FuzzParsePrivateKeyB64(f *testing.F) {
	f.Add("")
	f.Add(base64.StdEncoding.EncodeToString([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")))
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePrivateKeyB64(s)
		if err == nil && k.N.BitLen() < MinRSABits {
			t.Fatal("accepted a small key")
		}
	})
}
