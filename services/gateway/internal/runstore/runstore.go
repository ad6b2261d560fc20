// Package runstore is the gateway's write-ahead store of runs it has admitted and
// not yet seen end: queued runs, leased runs and tracked runs waiting for
// confirmation, so that a gateway restarted mid-run recovers them instead of
// forgetting them.
//
// A record keeps the run's envelope exactly as it arrived — signed and still
// encrypted to the pool's key — never the decrypted spec, so no secret of a run
// is written to the gateway's disk; likewise a hand-off keeps its content key
// only wrapped to the pool's key. One file per run, replaced atomically.
package runstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hangar-dev/hangar/platform/atomicfile"
	"github.com/hangar-dev/hangar/platform/ids"
)

// StateUnconfirmed marks the record of a tracked run that planned and waits
// for confirmation (ConfirmRun): it holds no lease, only its HandOff.
const StateUnconfirmed = "unconfirmed"

// HandOff is hangar.work.v1.HandOff as stored: where a run's encrypted
// workspace is and its content key, wrapped to the pool's key (never the key
// itself).
type HandOff struct {
	StateKey   string `json:"state_key"`
	WrappedKey []byte `json:"wrapped_key"`
	Nonce      []byte `json:"nonce"`
	SHA256     string `json:"sha256"`
	Size       uint64 `json:"size"`
}

// Record is one run in flight.
type Record struct {
	RunID string `json:"run_id"`
	// Envelope is the SignedEnvelope payload as received.
	Envelope   []byte    `json:"envelope"`
	ReceivedAt time.Time `json:"received_at"`
	AdmittedAt time.Time `json:"admitted_at"`
	// Lease, when the run was assigned; empty while queued. Epoch is kept
	// without a lease once the run had one (an unconfirmed or confirmed
	// run), so that its next lease has a higher one.
	LeaseID  string `json:"lease_id,omitempty"`
	Epoch    uint64 `json:"epoch,omitempty"`
	Executor string `json:"executor,omitempty"`
	// State is "" for a queued or leased run, StateUnconfirmed for a run
	// waiting for confirmation.
	State string `json:"state,omitempty"`
	// HandOff is the stored workspace of an unconfirmed run, and of a
	// confirmed run queued or leased to resume from it.
	HandOff *HandOff `json:"hand_off,omitempty"`
	// StartedSeq is the sequence number reserved for the "started" event of
	// the current lease, recorded with the lease before the event is emitted:
	// a gateway that stops in between announces it again, with the same
	// number (and so the same event id), when it recovers the run.
	StartedSeq uint64 `json:"started_seq,omitempty"`
}

// Store keeps records in a directory.
type Store struct{ dir string }

// Open opens (or creates) the store under dir.
func Open(dir string) (*Store, error) {
	d := filepath.Join(dir, "runs")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("runstore: %w", err)
	}
	return &Store{dir: d}, nil
}

func (s *Store) path(runID string) string { return filepath.Join(s.dir, runID+".json") }

// Save writes (or replaces) a record durably.
func (s *Store) Save(r *Record) error {
	if err := ids.CheckRunID(r.RunID); err != nil {
		return fmt.Errorf("runstore: save: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("runstore: %w", err)
	}
	if err := atomicfile.Write(s.path(r.RunID), b, 0o600); err != nil {
		return fmt.Errorf("runstore: save: %w", err)
	}
	return nil
}

// Delete removes a run's record; a missing record is not an error.
func (s *Store) Delete(runID string) error {
	if err := os.Remove(s.path(runID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("runstore: %w", err)
	}
	return nil
}

// Load returns every record, oldest admission first. Unreadable files (a crash
// while writing leaves only a .tmp) are skipped and reported.
func (s *Store) Load() ([]*Record, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("runstore: %w", err)}
	}
	var out []*Record
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		r := &Record{}
		if err == nil {
			err = json.Unmarshal(b, r)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("runstore: %s: %w", e.Name(), err))
			continue
		}
		out = append(out, r)
	}
	for i := 1; i < len(out); i++ {
		for k := i; k > 0 && out[k].AdmittedAt.Before(out[k-1].AdmittedAt); k-- {
			out[k], out[k-1] = out[k-1], out[k]
		}
	}
	return out, errs
}
