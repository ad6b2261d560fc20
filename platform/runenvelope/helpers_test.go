package runenvelope

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"
	"time"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// fixture holds keys generated once per test binary (RSA generation is slow).
type fixture struct {
	poolKey, otherPoolKey *rsa.PrivateKey
	signPub               ed25519.PublicKey
	signKey               ed25519.PrivateKey
	otherSignKey          ed25519.PrivateKey
}

var fixtures = sync.OnceValue(func() *fixture {
	gen := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	f := &fixture{poolKey: gen(), otherPoolKey: gen()}
	var err error
	if f.signPub, f.signKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	if _, f.otherSignKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return f
})

const secretValue = "s3cr3t-VALUE-never-in-errors"

var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func testSpec() *runv1.RunSpec {
	return &runv1.RunSpec{
		Type:        runv1.RunType_RUN_TYPE_PROPOSED,
		Stack:       &runv1.Stack{Id: "stack-1", Name: "infra", Labels: []string{"prod"}},
		Commit:      &runv1.Commit{Sha: "abc123", Branch: "main"},
		RunnerImage: "ghcr.io/acme/runner:1.4",
		Env:         []*runv1.EnvVar{{Name: "TOKEN", Value: secretValue, Secret: true}},
		Phases:      []*runv1.Phase{{Name: "plan", Commands: []string{"terraform plan"}}},
	}
}

func testParams(f *fixture) SealParams {
	return SealParams{
		SigningKey:   f.signKey,
		PoolKey:      &f.poolKey.PublicKey,
		RunID:        "run-1",
		PoolID:       "pool-a",
		Spec:         testSpec(),
		TraceContext: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		IssuedAt:     testNow,
		TTL:          time.Hour,
	}
}

func testOpener(f *fixture) *Opener {
	return &Opener{PoolID: "pool-a", PoolKey: f.poolKey, VerifyKey: f.signPub, Now: func() time.Time { return testNow }}
}

func mustSeal(t testing.TB, p SealParams) []byte {
	t.Helper()
	b, err := Seal(p)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return b
}

// decodeSigned splits a payload into its SignedEnvelope and RunEnvelope.
func decodeSigned(t testing.TB, payload []byte) (*runv1.SignedEnvelope, *runv1.RunEnvelope) {
	t.Helper()
	se := &runv1.SignedEnvelope{}
	if err := proto.Unmarshal(payload, se); err != nil {
		t.Fatal(err)
	}
	env := &runv1.RunEnvelope{}
	if err := proto.Unmarshal(se.GetEnvelope(), env); err != nil {
		t.Fatal(err)
	}
	return se, env
}

// resign signs raw envelope bytes with key, as a control plane would.
func resign(t testing.TB, key ed25519.PrivateKey, envBytes []byte) []byte {
	t.Helper()
	b, err := proto.Marshal(&runv1.SignedEnvelope{Envelope: envBytes, Signature: ed25519.Sign(key, signed(runDomain, envBytes))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unknownField is a field number no Hangar message uses, as wire bytes.
func unknownField() []byte {
	b := protowire.AppendTag(nil, 999, protowire.VarintType)
	return protowire.AppendVarint(b, 7)
}
