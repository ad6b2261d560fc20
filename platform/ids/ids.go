// Package ids is the one definition of Hangar's identifiers: run ids, pool ids
// and command ids. Every component that receives, stores or derives a name from
// such an id (envelopes, the gateway's stores, container names and labels,
// logship's spool directories, MQTT topic levels, broker ACLs) checks it here.
//
// The rule is the strictest that every id Hangar issues passes: 1-64 bytes of
// [A-Za-z0-9_-]. Such an id is safe as a file name (no '.', no separator), as
// one MQTT topic level (no '/', '+', '#', no leading '$'), as a Docker name or
// label value, and inside an S3 key.
package ids

import (
	"errors"
	"fmt"
)

// MaxLen is the longest valid id, in bytes.
const MaxLen = 64

var (
	// ErrInvalidRunID is wrapped by CheckRunID.
	ErrInvalidRunID = errors.New("invalid run id")
	// ErrInvalidPoolID is wrapped by CheckPoolID.
	ErrInvalidPoolID = errors.New("invalid pool id")
	// ErrInvalidCommandID is wrapped by CheckCommandID.
	ErrInvalidCommandID = errors.New("invalid command id")
)

// Rule says, for error messages, what a valid id looks like.
const Rule = "1-64 characters of A-Z a-z 0-9 _ -"

// Valid reports whether id follows the rule shared by run, pool and command ids.
func Valid(id string) bool {
	if len(id) == 0 || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidRunID reports whether id is a valid run id.
func ValidRunID(id string) bool { return Valid(id) }

// ValidPoolID reports whether id is a valid pool id.
func ValidPoolID(id string) bool { return Valid(id) }

// ValidCommandID reports whether id is a valid command id.
func ValidCommandID(id string) bool { return Valid(id) }

// CheckRunID returns nil for a valid run id, else an error wrapping
// ErrInvalidRunID that quotes the id and states the rule.
func CheckRunID(id string) error { return check(id, ErrInvalidRunID) }

// CheckPoolID is CheckRunID for pool ids (ErrInvalidPoolID).
func CheckPoolID(id string) error { return check(id, ErrInvalidPoolID) }

// CheckCommandID is CheckRunID for command ids (ErrInvalidCommandID).
func CheckCommandID(id string) error { return check(id, ErrInvalidCommandID) }

func check(id string, sentinel error) error {
	if Valid(id) {
		return nil
	}
	if len(id) > MaxLen {
		return fmt.Errorf("%w: %d bytes (%q...), want %s", sentinel, len(id), id[:16], Rule)
	}
	return fmt.Errorf("%w %q: want %s", sentinel, id, Rule)
}
