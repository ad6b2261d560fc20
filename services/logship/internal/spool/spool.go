// Package spool keeps the masked logs of the runs logship is shipping on
// local disk, with a small state file per run, so that nothing a run's
// executor was told is stored is lost when S3 is unreachable or logship
// restarts.
//
// Layout, under the spool directory (0700):
//
//	<run_id>/log         the masked log bytes (0600); only masked bytes are
//	                     ever written here, never a raw secret
//	<run_id>/state.json  the run's durable state (see State)
//
// The log file may hold more bytes than State.MaskedBytes: those were
// written after the last commit and are not acknowledged; reopening a run
// truncates them. A commit fsyncs the log, then replaces state.json
// atomically (write, fsync, rename, fsync of the directory).
package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
)

// ErrInvalidRunID is returned for a run id that cannot name a directory or
// an S3 key segment safely.
var ErrInvalidRunID = errors.New("invalid run id (1-200 characters of A-Z a-z 0-9 . _ - : @ + =, not starting with a dot)")

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9_\-:@+=][A-Za-z0-9._\-:@+=]{0,199}$`)

// ValidRunID reports whether id can be used as a run id.
func ValidRunID(id string) bool { return runIDPattern.MatchString(id) }

const (
	logName   = "log"
	stateName = "state.json"
)

// State is what a run has durably accepted and uploaded.
type State struct {
	RunID   string `json:"run_id"`
	PoolID  string `json:"pool_id,omitempty"`
	StackID string `json:"stack_id,omitempty"`
	// AckedSequence is the last chunk acknowledged to the executor: every
	// byte of chunks up to it is masked into the first MaskedBytes bytes of
	// the log.
	AckedSequence uint64 `json:"acked_sequence"`
	MaskedBytes   int64  `json:"masked_bytes"`
	// UploadedBytes of the log are in the live chunk objects 1..ChunkObjects.
	UploadedBytes int64  `json:"uploaded_bytes"`
	ChunkObjects  uint64 `json:"chunk_objects"`
	// Closed is set once the executor closed the log; MaskedBytes is then
	// the final size and SHA256 its digest (hex).
	Closed bool   `json:"closed,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// Spool is the spool directory.
type Spool struct {
	dir string
}

// Open creates the spool directory if needed.
func Open(dir string) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	return &Spool{dir: dir}, nil
}

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.dir }

// Runs lists the run ids found in the spool.
func (s *Spool) Runs() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list spool: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && ValidRunID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// Run is one run's spool files. Its methods are safe for concurrent use,
// but Append, Truncate and Commit are meant for one writer at a time.
type Run struct {
	dir string

	mu    sync.Mutex
	f     *os.File
	size  int64
	state State
}

// OpenRun opens (creating if needed) the spool of run id. The log file is
// truncated to the committed State.MaskedBytes.
func (s *Spool) OpenRun(id string) (*Run, error) {
	if !ValidRunID(id) {
		return nil, ErrInvalidRunID
	}
	dir := filepath.Join(s.dir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open run spool: %w", err)
	}
	r := &Run{dir: dir, state: State{RunID: id}}
	b, err := os.ReadFile(filepath.Join(dir, stateName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read run state: %w", err)
	default:
		if err := json.Unmarshal(b, &r.state); err != nil {
			return nil, fmt.Errorf("read run state %s: %w", filepath.Join(dir, stateName), err)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, logName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open run log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open run log: %w", err)
	}
	if st.Size() < r.state.MaskedBytes {
		f.Close()
		return nil, fmt.Errorf("open run log: %s has %d bytes, its state says %d were committed", f.Name(), st.Size(), r.state.MaskedBytes)
	}
	r.f = f
	r.size = st.Size()
	if err := r.Truncate(r.state.MaskedBytes); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// State returns the last committed state.
func (r *Run) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// Size returns the number of bytes in the log file, committed or not.
func (r *Run) Size() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size
}

// Write appends p to the log file, not durably until Commit.
func (r *Run) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.f.WriteAt(p, r.size)
	r.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write spool: %w", err)
	}
	return n, nil
}

// Truncate cuts the log file to n bytes, dropping bytes not committed.
func (r *Run) Truncate(n int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.f.Truncate(n); err != nil {
		return fmt.Errorf("truncate spool: %w", err)
	}
	r.size = n
	return nil
}

// ReadAt reads committed or uncommitted log bytes. Its errors are those of
// os.File.ReadAt, unwrapped, so that io.EOF is io.EOF for io.SectionReader.
func (r *Run) ReadAt(p []byte, off int64) (int, error) {
	return r.f.ReadAt(p, off)
}

// SyncLog makes the log bytes written so far durable.
func (r *Run) SyncLog() error {
	if err := r.f.Sync(); err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	return nil
}

// Commit makes the log durable and then records st.
func (r *Run) Commit(st State) error {
	if err := r.SyncLog(); err != nil {
		return err
	}
	return r.SaveState(st)
}

// SaveState records st atomically without syncing the log, for changes
// that do not cover new log bytes (upload progress).
func (r *Run) SaveState(st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save run state: %w", err)
	}
	tmp, err := os.CreateTemp(r.dir, ".state-*")
	if err != nil {
		return fmt.Errorf("save run state: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(r.dir, stateName))
	}
	if err == nil {
		err = syncDir(r.dir)
	}
	if err != nil {
		return fmt.Errorf("save run state: %w", err)
	}
	r.mu.Lock()
	r.state = st
	r.mu.Unlock()
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Remove deletes the run's spool files. The log stays readable through
// ReadAt until Close.
func (r *Run) Remove() error {
	if err := os.RemoveAll(r.dir); err != nil {
		return fmt.Errorf("remove run spool: %w", err)
	}
	return nil
}

// Close closes the log file.
func (r *Run) Close() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	return nil
}
