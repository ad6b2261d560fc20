package engine

import (
	"errors"
	"strings"
)

// Sentinel errors. Callers match them with errors.Is; the gRPC handler maps them
// to status codes.
var (
	// ErrInvalidPolicy marks a policy that cannot be loaded: unreadable, a parse or
	// compile error, a wrong package, or no usable deny rule. The error's text
	// lists each problem as "file:row: message".
	ErrInvalidPolicy = errors.New("invalid policy")
	// ErrEvaluation marks a failed evaluation (for example a runtime conflict
	// between two rules of the policy). No decision was made.
	ErrEvaluation = errors.New("policy evaluation failed")
	// ErrInvalidDeny marks a deny set holding something other than strings.
	ErrInvalidDeny = errors.New("policy deny set is not a set of strings")
)

// PolicyError is the error returned for an invalid policy. Each problem is one
// "file:row: message" line (parse errors add the offending source line below).
type PolicyError struct {
	// Problems are the formatted problems, in the order OPA reported them.
	Problems []string
}

// Error returns the problems, one per line.
func (e *PolicyError) Error() string {
	return strings.Join(e.Problems, "\n")
}

// Is reports that a PolicyError is an ErrInvalidPolicy.
func (e *PolicyError) Is(target error) bool {
	return target == ErrInvalidPolicy
}
