package runenvelope

import (
	"bytes"
	"testing"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzVerify feeds arbitrary payloads to Verify and Decrypt: they must never
// panic, every rejection must be a *RejectError with a reason, and nothing is
// accepted unless its envelope bytes are exactly the ones the key signed.
func FuzzVerify(f *testing.F) {
	fx := fixtures()
	good := mustSeal(f, testParams(fx))
	se, _ := decodeSigned(f, good)
	goodEnvBytes := se.GetEnvelope()
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(append(bytes.Clone(good), unknownField()...))
	f.Add([]byte{})
	o := testOpener(fx)
	f.Fuzz(func(t *testing.T, payload []byte) {
		v, err := o.Verify(payload)
		if err != nil {
			if ReasonOf(err) == 0 {
				t.Fatalf("rejection without a reason: %v", err)
			}
			return
		}
		var got runv1.SignedEnvelope
		if err := proto.Unmarshal(payload, &got); err != nil || !bytes.Equal(got.GetEnvelope(), goodEnvBytes) {
			t.Fatalf("accepted an envelope that was not signed: run %q", v.RunID)
		}
		if _, err := o.Decrypt(v); err != nil && ReasonOf(err) == 0 {
			t.Fatalf("decrypt rejection without a reason: %v", err)
		}
	})
}
