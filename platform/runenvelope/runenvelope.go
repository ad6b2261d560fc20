// Package runenvelope builds and checks the messages a control plane sends to a
// pool over MQTT: the signed, encrypted run envelope (hangar.run.v1.SignedEnvelope
// on hangar/pools/{pool_id}/runs) and signed commands
// (hangar.event.v1.SignedCommand on hangar/pools/{pool_id}/commands).
//
// The receiving side follows the verification order documented on SignedEnvelope.
// Opener.Verify does steps 1-5 (size, decoding, signature, version, pool,
// expiry) without touching the pool's private key; step 6 (replay) belongs to the
// caller, which has the store; Opener.Decrypt does step 7. Every rejection is a
// *RejectError naming the REJECT_REASON_* to report.
package runenvelope

import (
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"maps"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/ids"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"google.golang.org/protobuf/proto"
)

const (
	// Version is the RunEnvelope version this package writes and accepts.
	Version = 1
	// DefaultMaxSize is the default payload size limit of an Opener (1 MiB).
	DefaultMaxSize = 1 << 20
	// DefaultClockSkew is how far in the future issued_at may be by default.
	DefaultClockSkew = time.Minute

	runDomain     = "hangar.run.v1\n"
	commandDomain = "hangar.command.v1\n"
)

// SpecAAD returns the associated data that binds a sealed run spec to its run and
// pool: "hangar.run.v1\x00" || run_id || "\x00" || pool_id.
func SpecAAD(runID, poolID string) []byte {
	b := make([]byte, 0, len("hangar.run.v1\x00")+len(runID)+1+len(poolID))
	b = append(b, "hangar.run.v1\x00"...)
	b = append(b, runID...)
	b = append(b, 0)
	return append(b, poolID...)
}

// SealParams is what Seal needs to build a run envelope.
type SealParams struct {
	// SigningKey is the control plane's run-signing key.
	SigningKey ed25519.PrivateKey
	// PoolKey is the pool's public key (from its certificate).
	PoolKey *rsa.PublicKey
	// RunID is unique per run: 1-64 characters of [A-Za-z0-9_-].
	RunID string
	// PoolID is the pool the run is for.
	PoolID string
	// Spec is encrypted to PoolKey.
	Spec *runv1.RunSpec
	// TraceContext is the submitter's W3C trace context (may be nil).
	TraceContext map[string]string
	// IssuedAt defaults to time.Now().
	IssuedAt time.Time
	// TTL is how long the envelope stays acceptable after IssuedAt; must be > 0.
	TTL time.Duration
}

// Seal encrypts p.Spec to the pool, signs the envelope and returns the marshalled
// SignedEnvelope: the exact MQTT payload.
func Seal(p SealParams) ([]byte, error) {
	switch {
	case len(p.SigningKey) != ed25519.PrivateKeySize:
		return nil, fmt.Errorf("runenvelope: seal: %w: signing key is not an Ed25519 private key", ErrInvalidParams)
	case p.PoolKey == nil:
		return nil, fmt.Errorf("runenvelope: seal: %w: no pool key", ErrInvalidParams)
	case !ids.ValidRunID(p.RunID):
		return nil, fmt.Errorf("runenvelope: seal: %w: %w: %w", ErrInvalidParams, ErrInvalidRunID, ids.CheckRunID(p.RunID))
	case !ids.ValidPoolID(p.PoolID):
		return nil, fmt.Errorf("runenvelope: seal: %w: %w", ErrInvalidParams, ids.CheckPoolID(p.PoolID))
	case p.Spec == nil:
		return nil, fmt.Errorf("runenvelope: seal: %w: no run spec", ErrInvalidParams)
	case p.TTL <= 0:
		return nil, fmt.Errorf("runenvelope: seal: %w: TTL must be positive", ErrInvalidParams)
	}
	issued := p.IssuedAt
	if issued.IsZero() {
		issued = time.Now()
	}
	plain, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.Spec)
	if err != nil {
		return nil, fmt.Errorf("runenvelope: seal: marshal spec: %w", err)
	}
	box, err := sealedbox.Seal(p.PoolKey, plain, SpecAAD(p.RunID, p.PoolID))
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("runenvelope: seal: %w", err)
	}
	env := &runv1.RunEnvelope{
		Version:         Version,
		RunId:           p.RunID,
		PoolId:          p.PoolID,
		IssuedAtUnixMs:  issued.UnixMilli(),
		ExpiresAtUnixMs: issued.Add(p.TTL).UnixMilli(),
		TraceContext:    maps.Clone(p.TraceContext),
		SealedSpec:      box,
	}
	envBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("runenvelope: seal: marshal envelope: %w", err)
	}
	out, err := proto.Marshal(&runv1.SignedEnvelope{
		Envelope:  envBytes,
		Signature: ed25519.Sign(p.SigningKey, signed(runDomain, envBytes)),
	})
	if err != nil {
		return nil, fmt.Errorf("runenvelope: seal: marshal signed envelope: %w", err)
	}
	return out, nil
}

// signed returns domain || msg, the bytes a signature covers.
func signed(domain string, msg []byte) []byte {
	b := make([]byte, 0, len(domain)+len(msg))
	return append(append(b, domain...), msg...)
}

// Opener checks payloads received by one pool. The zero values of MaxSize,
// ClockSkew and Now mean their defaults. An Opener is safe for concurrent use
// once configured.
type Opener struct {
	// PoolID is this pool's id (the CN of its certificate).
	PoolID string
	// PoolKey is the pool's private key; only Decrypt needs it.
	PoolKey *rsa.PrivateKey
	// VerifyKey is the control plane's run-verification key (from the token).
	VerifyKey ed25519.PublicKey
	// MaxSize is the largest accepted payload, default DefaultMaxSize.
	MaxSize int
	// ClockSkew is how far in the future issued_at may be: 0 means
	// DefaultClockSkew, a negative value means none.
	ClockSkew time.Duration
	// Now returns the current time, default time.Now.
	Now func() time.Time
}

// Verified is a run envelope that passed steps 1-5 of the verification order. Its
// spec is still encrypted.
type Verified struct {
	RunID        string
	Envelope     *runv1.RunEnvelope
	TraceContext map[string]string
	IssuedAt     time.Time
	ExpiresAt    time.Time
}

func (o *Opener) maxSize() int {
	if o.MaxSize <= 0 {
		return DefaultMaxSize
	}
	return o.MaxSize
}

func (o *Opener) skew() time.Duration {
	switch {
	case o.ClockSkew == 0:
		return DefaultClockSkew
	case o.ClockSkew < 0:
		return 0
	}
	return o.ClockSkew
}

func (o *Opener) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

func (o *Opener) checkVerifier() error {
	if o.PoolID == "" {
		return fmt.Errorf("runenvelope: %w: no pool id", ErrInvalidOpener)
	}
	if len(o.VerifyKey) != ed25519.PublicKeySize {
		return fmt.Errorf("runenvelope: %w: verification key is not an Ed25519 public key", ErrInvalidOpener)
	}
	return nil
}

// Verify performs steps 1-5 of the SignedEnvelope verification order on an MQTT
// payload: size, decoding with no unknown fields, signature, version, pool and
// expiry. It does not decrypt. Rejections are *RejectError; a misconfigured
// Opener gives an error wrapping ErrInvalidOpener.
func (o *Opener) Verify(payload []byte) (*Verified, error) {
	if err := o.checkVerifier(); err != nil {
		return nil, err
	}
	reject := func(reason eventv1.RejectReason, runID string, sigOK bool, format string, args ...any) error {
		return &RejectError{Reason: reason, RunID: runID, SignatureValid: sigOK, Detail: fmt.Sprintf(format, args...)}
	}
	if n, limit := len(payload), o.maxSize(); n > limit {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_OVERSIZE, "", false, "payload is %d bytes, limit is %d", n, limit)
	}
	var se runv1.SignedEnvelope
	if err := unmarshalStrict(payload, &se); err != nil {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, "", false, "%v", err)
	}
	if len(se.GetEnvelope()) == 0 {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, "", false, "signed envelope has no envelope")
	}
	claimedRunID := peekRunID(se.GetEnvelope())
	sig := se.GetSignature()
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(o.VerifyKey, signed(runDomain, se.GetEnvelope()), sig) {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, claimedRunID, false, "signature does not verify with the run-verification key")
	}
	// Version before unknown fields: a newer envelope is reported as such.
	var env runv1.RunEnvelope
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(se.GetEnvelope(), &env); err != nil {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, "", true, "decode RunEnvelope: %v", err)
	}
	runID := ""
	if ids.ValidRunID(env.GetRunId()) {
		runID = env.GetRunId()
	}
	if v := env.GetVersion(); v != Version {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_UNSUPPORTED_VERSION, runID, true, "envelope version %d, this gateway supports %d", v, Version)
	}
	if path := unknownFieldPath(env.ProtoReflect()); path != "" {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, runID, true, "decode RunEnvelope: unknown fields in %s", path)
	}
	if runID == "" {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, "", true, "run id is not 1-64 characters of [A-Za-z0-9_-]")
	}
	if env.GetSealedSpec() == nil {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, runID, true, "envelope has no sealed spec")
	}
	if env.GetPoolId() != o.PoolID {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_WRONG_POOL, runID, true, "envelope is for pool %q, this is pool %q", truncate(env.GetPoolId(), 128), o.PoolID)
	}
	issued, expires := time.UnixMilli(env.GetIssuedAtUnixMs()), time.UnixMilli(env.GetExpiresAtUnixMs())
	if err := o.checkTimes(issued, expires); err != "" {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_EXPIRED, runID, true, "%s", err)
	}
	return &Verified{
		RunID:        runID,
		Envelope:     &env,
		TraceContext: env.GetTraceContext(),
		IssuedAt:     issued,
		ExpiresAt:    expires,
	}, nil
}

// checkTimes returns why issued/expires are unacceptable now, or "".
func (o *Opener) checkTimes(issued, expires time.Time) string {
	now := o.now()
	if !now.Before(expires) {
		return fmt.Sprintf("expired at %s, now is %s", expires.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	if issued.After(now.Add(o.skew())) {
		return fmt.Sprintf("issued at %s, in the future beyond the allowed clock skew of %s (now is %s)",
			issued.UTC().Format(time.RFC3339Nano), o.skew(), now.UTC().Format(time.RFC3339Nano))
	}
	return ""
}

// Decrypt performs step 7: it opens the sealed spec of a verified envelope with
// the pool key and decodes it as a RunSpec with no unknown fields. Failures are
// *RejectError with REJECT_REASON_DECRYPT_FAILED or REJECT_REASON_MALFORMED; they
// never contain decrypted content.
func (o *Opener) Decrypt(v *Verified) (*runv1.RunSpec, error) {
	if o.PoolKey == nil {
		return nil, fmt.Errorf("runenvelope: decrypt: %w: no pool private key", ErrInvalidOpener)
	}
	if v == nil || v.Envelope == nil {
		return nil, fmt.Errorf("runenvelope: decrypt: %w: nothing to decrypt", ErrInvalidParams)
	}
	env := v.Envelope
	plain, err := sealedbox.Open(o.PoolKey, env.GetSealedSpec(), SpecAAD(env.GetRunId(), env.GetPoolId()))
	if err != nil {
		return nil, &RejectError{
			Reason: eventv1.RejectReason_REJECT_REASON_DECRYPT_FAILED, RunID: v.RunID, SignatureValid: true,
			Detail: "run spec does not decrypt with this pool's key (wrong pool key, or tampered or moved spec)", Err: err,
		}
	}
	defer clear(plain)
	spec := &runv1.RunSpec{}
	if err := unmarshalStrict(plain, spec); err != nil {
		// The decode error is not included: it could echo decrypted content.
		return nil, &RejectError{
			Reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, RunID: v.RunID, SignatureValid: true,
			Detail: "decrypted spec is not a RunSpec without unknown fields",
		}
	}
	return spec, nil
}

// peekRunID decodes envelope leniently to report the run id it claims, or ""
// when it does not decode or the id is not well-formed.
func peekRunID(envelope []byte) string {
	var env runv1.RunEnvelope
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(envelope, &env); err != nil {
		return ""
	}
	if !ids.ValidRunID(env.GetRunId()) {
		return ""
	}
	return env.GetRunId()
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
