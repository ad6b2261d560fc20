package runenvelope

import (
	"errors"
	"fmt"
	"strings"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// Sentinel errors for the sending side and for misconfiguration. Rejections of
// received payloads are *RejectError instead.
var (
	// ErrInvalidParams is wrapped by Seal and SealCommand for bad arguments.
	ErrInvalidParams = errors.New("runenvelope: invalid parameters")
	// ErrInvalidRunID is wrapped (together with ErrInvalidParams) for a run id
	// that is not 1-64 characters of [A-Za-z0-9_-].
	ErrInvalidRunID = errors.New("runenvelope: invalid run id")
	// ErrInvalidOpener is wrapped when an Opener lacks what an operation needs
	// (pool id, verification key, pool private key).
	ErrInvalidOpener = errors.New("runenvelope: invalid opener")
)

// RejectError says why a received run envelope or command was refused. Its
// Detail never contains key material or decrypted content.
type RejectError struct {
	// Reason is the REJECT_REASON_* to report in the EnvelopeRejected event.
	Reason eventv1.RejectReason
	// RunID is the envelope's run id once the envelope bytes decoded and the id is
	// well-formed, even if the signature is bad (then SignatureValid is false and
	// the id is only a claim). Empty for commands.
	RunID string
	// CommandID is the command's id under the same rule, for commands.
	CommandID string
	// SignatureValid reports whether the signature had been verified when the
	// payload was rejected.
	SignatureValid bool
	// Detail is a human-readable explanation.
	Detail string
	// Err is the underlying error, if any (for errors.Is, e.g. sealedbox.ErrDecrypt).
	Err error

	command bool
}

// Error returns e.g. "envelope rejected (bad_signature): signature does not verify".
func (e *RejectError) Error() string {
	what := "envelope"
	if e.command {
		what = "command"
	}
	return fmt.Sprintf("%s rejected (%s): %s", what, ReasonName(e.Reason), e.Detail)
}

// Unwrap returns the underlying error.
func (e *RejectError) Unwrap() error { return e.Err }

// ReasonOf returns the reject reason carried by err, or
// REJECT_REASON_UNSPECIFIED if err is not (or does not wrap) a *RejectError.
func ReasonOf(err error) eventv1.RejectReason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return eventv1.RejectReason_REJECT_REASON_UNSPECIFIED
}

// ReasonName returns the short lowercase name of r ("bad_signature").
func ReasonName(r eventv1.RejectReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "REJECT_REASON_"))
}
