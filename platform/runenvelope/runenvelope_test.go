package runenvelope

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"google.golang.org/protobuf/proto"
)

func TestSealVerifyDecrypt(t *testing.T) {
	f := fixtures()
	payload := mustSeal(t, testParams(f))
	o := testOpener(f)
	v, err := o.Verify(payload)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if v.RunID != "run-1" || v.Envelope.GetPoolId() != "pool-a" || v.TraceContext["traceparent"] == "" {
		t.Fatalf("verified = %+v", v)
	}
	if !v.IssuedAt.Equal(testNow) || !v.ExpiresAt.Equal(testNow.Add(time.Hour)) {
		t.Fatalf("times %v %v", v.IssuedAt, v.ExpiresAt)
	}
	spec, err := o.Decrypt(v)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !proto.Equal(spec, testSpec()) {
		t.Fatalf("spec differs: %v", spec)
	}
	if bytes.Contains(payload, []byte(secretValue)) {
		t.Fatal("the payload holds the secret in clear")
	}
}

func TestVerifyRejects(t *testing.T) {
	f := fixtures()
	good := testParams(f)

	// withEnv re-signs (with the real key) a modified envelope: what only a
	// compromised or buggy signer could produce. It tests the later steps.
	withEnv := func(mod func(env *runv1.RunEnvelope)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			_, env := decodeSigned(t, mustSeal(t, good))
			mod(env)
			return resign(t, f.signKey, marshal(t, env))
		}
	}
	withParams := func(mod func(p *SealParams)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			p := testParams(f)
			mod(&p)
			return mustSeal(t, p)
		}
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	sealSpecBytes := func(t *testing.T, plain []byte) *runv1.SealedBox {
		box, err := sealedbox.Seal(&f.poolKey.PublicKey, plain, SpecAAD("run-1", "pool-a"))
		if err != nil {
			t.Fatal(err)
		}
		return box
	}

	tests := []struct {
		name      string
		payload   func(t *testing.T) []byte
		opener    func(o *Opener)
		reason    eventv1.RejectReason
		runID     string
		sigValid  bool
		atDecrypt bool // rejected by Decrypt rather than Verify
	}{
		{name: "signed by another key", payload: withParams(func(p *SealParams) { p.SigningKey = f.otherSignKey }),
			reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, runID: "run-1"},
		{name: "flipped signature", payload: func(t *testing.T) []byte {
			se, _ := decodeSigned(t, mustSeal(t, good))
			se.Signature = flip(se.Signature, 5)
			return marshal(t, se)
		}, reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, runID: "run-1"},
		{name: "no signature", payload: func(t *testing.T) []byte {
			se, _ := decodeSigned(t, mustSeal(t, good))
			se.Signature = nil
			return marshal(t, se)
		}, reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, runID: "run-1"},
		{name: "signed without domain prefix", payload: func(t *testing.T) []byte {
			se, _ := decodeSigned(t, mustSeal(t, good))
			se.Signature = ed25519.Sign(f.signKey, se.Envelope)
			return marshal(t, se)
		}, reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, runID: "run-1"},
		{name: "tampered ciphertext, not re-signed", payload: func(t *testing.T) []byte {
			se, env := decodeSigned(t, mustSeal(t, good))
			env.SealedSpec.Ciphertext = flip(env.SealedSpec.Ciphertext, 0)
			se.Envelope = marshal(t, env)
			return marshal(t, se)
		}, reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, runID: "run-1"},
		{name: "another run id, not re-signed", payload: func(t *testing.T) []byte {
			se, env := decodeSigned(t, mustSeal(t, good))
			env.RunId = "run-evil"
			se.Envelope = marshal(t, env)
			return marshal(t, se)
		}, reason: eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, runID: "run-evil"},
		{name: "tampered ciphertext, re-signed", payload: withEnv(func(env *runv1.RunEnvelope) {
			env.SealedSpec.Ciphertext = flip(env.SealedSpec.Ciphertext, 3)
		}), reason: eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "tampered wrapped key, re-signed", payload: withEnv(func(env *runv1.RunEnvelope) {
			env.SealedSpec.WrappedKey = flip(env.SealedSpec.WrappedKey, 100)
		}), reason: eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "tampered nonce, re-signed", payload: withEnv(func(env *runv1.RunEnvelope) {
			env.SealedSpec.Nonce = flip(env.SealedSpec.Nonce, 0)
		}), reason: eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "encrypted to another pool's key", payload: withParams(func(p *SealParams) { p.PoolKey = &f.otherPoolKey.PublicKey }),
			reason: eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "spec moved into another run's envelope", payload: func(t *testing.T) []byte {
			_, victim := decodeSigned(t, mustSeal(t, good))
			p := testParams(f)
			p.RunID = "run-2"
			_, env := decodeSigned(t, mustSeal(t, p))
			env.SealedSpec = victim.SealedSpec
			return resign(t, f.signKey, marshal(t, env))
		}, reason: eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, runID: "run-2", sigValid: true, atDecrypt: true},
		{name: "another pool's run", payload: withParams(func(p *SealParams) { p.PoolID = "pool-b" }),
			reason: eventv1.RejectReason_REJECT_REASON_WRONG_POOL, runID: "run-1", sigValid: true},
		{name: "spec moved to another pool's envelope", payload: withEnv(func(env *runv1.RunEnvelope) { env.PoolId = "pool-b" }),
			opener: func(o *Opener) { o.PoolID = "pool-b" },
			reason: eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "expired", payload: withParams(func(p *SealParams) { p.IssuedAt = testNow.Add(-2 * time.Hour) }),
			reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, runID: "run-1", sigValid: true},
		{name: "expires exactly now", payload: withParams(func(p *SealParams) { p.IssuedAt = testNow.Add(-time.Hour) }),
			reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, runID: "run-1", sigValid: true},
		{name: "no expiry", payload: withEnv(func(env *runv1.RunEnvelope) { env.ExpiresAtUnixMs = 0 }),
			reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, runID: "run-1", sigValid: true},
		{name: "issued in the future", payload: withParams(func(p *SealParams) { p.IssuedAt = testNow.Add(2 * time.Minute) }),
			reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, runID: "run-1", sigValid: true},
		{name: "issued in the future, larger skew allowed", payload: withParams(func(p *SealParams) { p.IssuedAt = testNow.Add(2 * time.Minute) }),
			opener: func(o *Opener) { o.ClockSkew = 5 * time.Minute }},
		{name: "issued in the future within skew", payload: withParams(func(p *SealParams) { p.IssuedAt = testNow.Add(59 * time.Second) })},
		{name: "issued slightly in the future, no skew allowed", payload: withParams(func(p *SealParams) { p.IssuedAt = testNow.Add(time.Second) }),
			opener: func(o *Opener) { o.ClockSkew = -1 },
			reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, runID: "run-1", sigValid: true},
		{name: "oversize", payload: func(t *testing.T) []byte { return make([]byte, DefaultMaxSize+1) },
			reason: eventv1.RejectReason_REJECT_REASON_OVERSIZE},
		{name: "oversize for a small limit", payload: func(t *testing.T) []byte { return mustSeal(t, good) },
			opener: func(o *Opener) { o.MaxSize = 100 },
			reason: eventv1.RejectReason_REJECT_REASON_OVERSIZE},
		{name: "malformed bytes", payload: func(t *testing.T) []byte { return []byte("\xff\xff\xff\xffnot a protobuf") },
			reason: eventv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "empty payload", payload: func(t *testing.T) []byte { return nil },
			reason: eventv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "truncated payload", payload: func(t *testing.T) []byte { p := mustSeal(t, good); return p[:len(p)/2] },
			reason: eventv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "envelope is not a RunEnvelope", payload: func(t *testing.T) []byte {
			return resign(t, f.signKey, []byte("\xff\xff\xff\xff garbage"))
		}, reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, sigValid: true},
		{name: "unknown field in SignedEnvelope", payload: func(t *testing.T) []byte {
			return append(mustSeal(t, good), unknownField()...)
		}, reason: eventv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "unknown field in RunEnvelope", payload: func(t *testing.T) []byte {
			se, _ := decodeSigned(t, mustSeal(t, good))
			return resign(t, f.signKey, append(se.Envelope, unknownField()...))
		}, reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, runID: "run-1", sigValid: true},
		{name: "unknown field in SealedBox", payload: withEnv(func(env *runv1.RunEnvelope) {
			env.SealedSpec.ProtoReflect().SetUnknown(unknownField())
		}), reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, runID: "run-1", sigValid: true},
		{name: "unknown field in RunSpec", payload: withEnv(func(env *runv1.RunEnvelope) {
			env.SealedSpec = sealSpecBytes(t, append(marshal(t, testSpec()), unknownField()...))
		}), reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "unknown field nested in RunSpec", payload: withEnv(func(env *runv1.RunEnvelope) {
			s := testSpec()
			s.Phases[0].ProtoReflect().SetUnknown(unknownField())
			env.SealedSpec = sealSpecBytes(t, marshal(t, s))
		}), reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "decrypted spec is garbage", payload: withEnv(func(env *runv1.RunEnvelope) {
			env.SealedSpec = sealSpecBytes(t, []byte("\xff\xff\xff\xff"+secretValue))
		}), reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, runID: "run-1", sigValid: true, atDecrypt: true},
		{name: "version 2", payload: withEnv(func(env *runv1.RunEnvelope) { env.Version = 2 }),
			reason: eventv1.RejectReason_REJECT_REASON_UNSUPPORTED_VERSION, runID: "run-1", sigValid: true},
		{name: "version 2 with new fields", payload: func(t *testing.T) []byte {
			_, env := decodeSigned(t, mustSeal(t, good))
			env.Version = 2
			return resign(t, f.signKey, append(marshal(t, env), unknownField()...))
		}, reason: eventv1.RejectReason_REJECT_REASON_UNSUPPORTED_VERSION, runID: "run-1", sigValid: true},
		{name: "version 0", payload: withEnv(func(env *runv1.RunEnvelope) { env.Version = 0 }),
			reason: eventv1.RejectReason_REJECT_REASON_UNSUPPORTED_VERSION, runID: "run-1", sigValid: true},
		{name: "invalid run id", payload: withEnv(func(env *runv1.RunEnvelope) { env.RunId = "run/1" }),
			reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, sigValid: true},
		{name: "no sealed spec", payload: withEnv(func(env *runv1.RunEnvelope) { env.SealedSpec = nil }),
			reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, runID: "run-1", sigValid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOpener(f)
			if tt.opener != nil {
				tt.opener(o)
			}
			payload := tt.payload(t)
			v, err := o.Verify(payload)
			if err == nil {
				_, err = o.Decrypt(v)
				if err != nil && !tt.atDecrypt {
					t.Fatalf("Verify accepted, Decrypt rejected: %v", err)
				}
			} else if tt.atDecrypt {
				t.Fatalf("Verify rejected, want a Decrypt rejection: %v", err)
			}
			if tt.reason == eventv1.RejectReason_REJECT_REASON_UNSPECIFIED {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %v", tt.reason)
			}
			var re *RejectError
			if !errors.As(err, &re) {
				t.Fatalf("error %T %v is not a *RejectError", err, err)
			}
			if re.Reason != tt.reason || ReasonOf(err) != tt.reason {
				t.Fatalf("reason %v, want %v (%v)", re.Reason, tt.reason, err)
			}
			if re.RunID != tt.runID {
				t.Errorf("run id %q, want %q", re.RunID, tt.runID)
			}
			if re.SignatureValid != tt.sigValid {
				t.Errorf("SignatureValid %v, want %v", re.SignatureValid, tt.sigValid)
			}
			if want := "envelope rejected (" + ReasonName(tt.reason) + "): "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message %q does not start with %q", err.Error(), want)
			}
			if strings.Contains(err.Error(), secretValue) {
				t.Fatal("the error contains decrypted content")
			}
			if tt.reason == eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED && !errors.Is(err, sealedbox.ErrDecrypt) {
				t.Errorf("decrypt failure does not wrap sealedbox.ErrDecrypt")
			}
		})
	}
}

func TestSealParams(t *testing.T) {
	f := fixtures()
	tests := []struct {
		name  string
		mod   func(p *SealParams)
		runID bool
	}{
		{"no signing key", func(p *SealParams) { p.SigningKey = nil }, false},
		{"no pool key", func(p *SealParams) { p.PoolKey = nil }, false},
		{"empty run id", func(p *SealParams) { p.RunID = "" }, true},
		{"run id too long", func(p *SealParams) { p.RunID = strings.Repeat("a", 65) }, true},
		{"run id with slash", func(p *SealParams) { p.RunID = "a/b" }, true},
		{"run id with space", func(p *SealParams) { p.RunID = "a b" }, true},
		{"run id non-ascii", func(p *SealParams) { p.RunID = "rün" }, true},
		{"empty pool id", func(p *SealParams) { p.PoolID = "" }, false},
		{"pool id with wildcard", func(p *SealParams) { p.PoolID = "pool/#" }, false},
		{"no spec", func(p *SealParams) { p.Spec = nil }, false},
		{"zero ttl", func(p *SealParams) { p.TTL = 0 }, false},
		{"negative ttl", func(p *SealParams) { p.TTL = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testParams(f)
			tt.mod(&p)
			_, err := Seal(p)
			if !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("got %v, want ErrInvalidParams", err)
			}
			if errors.Is(err, ErrInvalidRunID) != tt.runID {
				t.Fatalf("ErrInvalidRunID = %v, want %v", errors.Is(err, ErrInvalidRunID), tt.runID)
			}
		})
	}
	t.Run("max length run id and zero IssuedAt", func(t *testing.T) {
		p := testParams(f)
		p.RunID = strings.Repeat("A_z-9", 12) + "abcd"
		p.IssuedAt = time.Time{}
		payload := mustSeal(t, p)
		o := testOpener(f)
		o.Now = nil
		if _, err := o.Verify(payload); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOpenerConfig(t *testing.T) {
	f := fixtures()
	payload := mustSeal(t, testParams(f))
	for name, o := range map[string]*Opener{
		"no pool id":    {VerifyKey: f.signPub},
		"no verify key": {PoolID: "pool-a"},
		"short key":     {PoolID: "pool-a", VerifyKey: f.signPub[:16]},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := o.Verify(payload)
			if !errors.Is(err, ErrInvalidOpener) || ReasonOf(err) != eventv1.RejectReason_REJECT_REASON_UNSPECIFIED {
				t.Fatalf("got %v", err)
			}
		})
	}
	t.Run("decrypt without pool key", func(t *testing.T) {
		o := testOpener(f)
		v, err := o.Verify(payload)
		if err != nil {
			t.Fatal(err)
		}
		o.PoolKey = nil
		if _, err := o.Decrypt(v); !errors.Is(err, ErrInvalidOpener) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestReasonOf(t *testing.T) {
	re := &RejectError{Reason: eventv1.RejectReason_REJECT_REASON_EXPIRED, Detail: "late"}
	tests := []struct {
		err  error
		want eventv1.RejectReason
	}{
		{nil, eventv1.RejectReason_REJECT_REASON_UNSPECIFIED},
		{errors.New("x"), eventv1.RejectReason_REJECT_REASON_UNSPECIFIED},
		{re, eventv1.RejectReason_REJECT_REASON_EXPIRED},
		{errors.Join(errors.New("ctx"), re), eventv1.RejectReason_REJECT_REASON_EXPIRED},
	}
	for _, tt := range tests {
		if got := ReasonOf(tt.err); got != tt.want {
			t.Errorf("ReasonOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if got := re.Error(); got != "envelope rejected (expired): late" {
		t.Errorf("Error() = %q", got)
	}
}

func TestSpecAAD(t *testing.T) {
	if got := string(SpecAAD("r", "p")); got != "hangar.run.v1\x00r\x00p" {
		t.Fatalf("SpecAAD = %q", got)
	}
}
