package runenvelope

import (
	"crypto/ed25519"
	"fmt"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/ids"
	"google.golang.org/protobuf/proto"
)

// SealCommand signs cmd with the control plane's run-signing key and returns the
// marshalled SignedCommand: the exact MQTT payload. cmd must have a command id, a
// pool id, an expiry and a kind.
func SealCommand(key ed25519.PrivateKey, cmd *eventv1.Command) ([]byte, error) {
	switch {
	case len(key) != ed25519.PrivateKeySize:
		return nil, fmt.Errorf("runenvelope: seal command: %w: signing key is not an Ed25519 private key", ErrInvalidParams)
	case cmd == nil:
		return nil, fmt.Errorf("runenvelope: seal command: %w: no command", ErrInvalidParams)
	case !ids.ValidCommandID(cmd.GetCommandId()):
		return nil, fmt.Errorf("runenvelope: seal command: %w: %w", ErrInvalidParams, ids.CheckCommandID(cmd.GetCommandId()))
	case !ids.ValidPoolID(cmd.GetPoolId()):
		return nil, fmt.Errorf("runenvelope: seal command: %w: %w", ErrInvalidParams, ids.CheckPoolID(cmd.GetPoolId()))
	case cmd.GetExpiresAtUnixMs() <= cmd.GetIssuedAtUnixMs():
		return nil, fmt.Errorf("runenvelope: seal command: %w: expiry must be after issue time", ErrInvalidParams)
	case cmd.GetKind() == nil:
		return nil, fmt.Errorf("runenvelope: seal command: %w: command has no kind", ErrInvalidParams)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("runenvelope: seal command: marshal: %w", err)
	}
	out, err := proto.Marshal(&eventv1.SignedCommand{Command: b, Signature: ed25519.Sign(key, signed(commandDomain, b))})
	if err != nil {
		return nil, fmt.Errorf("runenvelope: seal command: marshal signed command: %w", err)
	}
	return out, nil
}

// VerifyCommand checks a SignedCommand payload like a run envelope: size,
// decoding with no unknown fields, Ed25519 signature over
// "hangar.command.v1\n" || command, pool and expiry. Rejections are *RejectError
// (with CommandID filled when known).
func (o *Opener) VerifyCommand(payload []byte) (*eventv1.Command, error) {
	if err := o.checkVerifier(); err != nil {
		return nil, err
	}
	reject := func(reason eventv1.RejectReason, id string, sigOK bool, format string, args ...any) error {
		return &RejectError{Reason: reason, CommandID: id, SignatureValid: sigOK, Detail: fmt.Sprintf(format, args...), command: true}
	}
	if n, limit := len(payload), o.maxSize(); n > limit {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_OVERSIZE, "", false, "payload is %d bytes, limit is %d", n, limit)
	}
	var sc eventv1.SignedCommand
	if err := unmarshalStrict(payload, &sc); err != nil {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, "", false, "%v", err)
	}
	if len(sc.GetCommand()) == 0 {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, "", false, "signed command has no command")
	}
	claimed := peekCommandID(sc.GetCommand())
	sig := sc.GetSignature()
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(o.VerifyKey, signed(commandDomain, sc.GetCommand()), sig) {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_BAD_SIGNATURE, claimed, false, "signature does not verify with the run-verification key")
	}
	cmd := &eventv1.Command{}
	if err := unmarshalStrict(sc.GetCommand(), cmd); err != nil {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, claimed, true, "%v", err)
	}
	id := claimed
	if id == "" {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, "", true, "command id is not %s", ids.Rule)
	}
	if cmd.GetKind() == nil {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_MALFORMED, id, true, "command has no kind")
	}
	if cmd.GetPoolId() != o.PoolID {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_WRONG_POOL, id, true, "command is for pool %q, this is pool %q", truncate(cmd.GetPoolId(), 128), o.PoolID)
	}
	if err := o.checkTimes(time.UnixMilli(cmd.GetIssuedAtUnixMs()), time.UnixMilli(cmd.GetExpiresAtUnixMs())); err != "" {
		return nil, reject(eventv1.RejectReason_REJECT_REASON_EXPIRED, id, true, "%s", err)
	}
	return cmd, nil
}

// peekCommandID returns the id a command claims, or "" if it does not decode or
// the id is not a valid command id (ids.ValidCommandID).
func peekCommandID(b []byte) string {
	var cmd eventv1.Command
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &cmd); err != nil {
		return ""
	}
	if id := cmd.GetCommandId(); ids.ValidCommandID(id) {
		return id
	}
	return ""
}
