// Package spool keeps the masked logs of the runs logship is shipping on
// local disk, with a small state file per run, so that nothing a run's
// executor was told is stored is lost when S3 is unreachable or logship
// restarts.
//
// Layout, under the spool directory (0700):
//
//	<run_id>/log         the masked log bytes (0600); only masked bytes are
//	                     ever written here, never a raw secret. While the
//	                     run goes on: its head (at most State.HeadLimit
//	                     bytes); once closed: the stored log, or its
//	                     head when its tail stays in the tail segment
//	                     (State.StoredHead)
//	<run_id>/tail.<n>    the tail segment (0600): masked bytes past the
//	                     head, once the head is full (see below)
//	<run_id>/state       the run's durable state (see State), in two
//	                     slots written in turn (see state.go; an older
//	                     logship's state.json is read and replaced)
//
// The log file may hold more bytes than State.MaskedBytes, and the tail
// segment more than State.TailBytes-State.TailBase: those were written
// after the last commit and are not acknowledged; reopening a run
// truncates them. Write and WriteTail return before the bytes are in the
// files: a goroutine of the run writes them, and hashes them, behind the
// writer (behind.go), and a commit waits for it before its fsyncs, so the
// committed bytes are in the files when the state names them. A commit
// fdatasyncs the log and the tail segment, then
// saves the state: it overwrites the older of the state file's two slots
// and fdatasyncs it, so a crash leaves the state before or after the
// save, never a mix.
//
// # The tail segment
//
// A log longer than its limit keeps its head and its last TailLimit bytes.
// The tail is not a ring overwritten in place: a ring cannot be rolled back
// to the last commit, since the bytes written after it (not acknowledged,
// and dropped if the stream breaks) would already have overwritten the
// oldest committed ones. The tail segment is instead append-only, like the
// log, and so rolls back the same way (truncation); it is bounded by
// compaction (CompactTail, or StartCompaction and Finish) at commit
// points: the bytes still needed, and those written since the commit, are
// copied into the next segment tail.<n+1>, whose committed part is
// fsynced, then the state names it (TailSegment, TailBase), then the old
// segment is removed. A crash at any point leaves the state naming a complete
// segment; a segment it does not name is a leftover, removed at open.
package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/hangar-dev/hangar/platform/ids"
)

// ErrInvalidRunID is returned for a run id that is not valid (ids.ValidRunID),
// which also keeps it safe as a directory name and an S3 key segment.
var ErrInvalidRunID = fmt.Errorf("%w (%s)", ids.ErrInvalidRunID, ids.Rule)

const (
	logName    = "log"
	tailPrefix = "tail."
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
	// StoredHead, once closed, is set when the stored log is not all in
	// the log file: it is then the log file's first StoredHead bytes (the
	// head), Notice, and the tail segment's last bytes up to TailBytes
	// (MaskedBytes in all), read in place (ReadStoredAt) rather than
	// copied after the head. Zero: the log file holds it all.
	StoredHead int64  `json:"stored_head,omitempty"`
	Notice     string `json:"notice,omitempty"`

	// HeadLimit and TailLimit are the run's log size limit, fixed when the
	// run is first opened (a new limit applies to new runs only): the log
	// file holds the first HeadLimit masked bytes; the bytes after them go
	// to the tail segment, of which the last TailLimit are kept. Zero in a
	// state written before limits existed.
	HeadLimit int64 `json:"head_limit,omitempty"`
	TailLimit int64 `json:"tail_limit,omitempty"`
	// TailBytes is the number of committed masked bytes past the head,
	// those cut included: the masked stream's committed size is
	// MaskedBytes+TailBytes until the log is closed. The tail segment
	// tail.<TailSegment> holds those from TailBase on.
	TailBytes   int64  `json:"tail_bytes,omitempty"`
	TailBase    int64  `json:"tail_base,omitempty"`
	TailSegment uint64 `json:"tail_segment,omitempty"`

	// StdoutEmitted is the position in the masked stream (head and tail
	// bytes, no truncation notice) below which every line has been written
	// to logship's standard output, when that is on; StdoutTime (Unix ns)
	// and StdoutStream describe the partial line that starts there.
	StdoutEmitted int64  `json:"stdout_emitted,omitempty"`
	StdoutTime    int64  `json:"stdout_time,omitempty"`
	StdoutStream  string `json:"stdout_stream,omitempty"`

	// OpenLine says which stream's line is open (not ended by a newline)
	// at the end of the committed log: 0 none, else the stream's index in
	// runlog plus one. A resumed run goes on from there.
	OpenLine int `json:"open_line,omitempty"`
	// Incomplete is set on a log closed by logship because its executor
	// did not come back (see runlog's idle close), not by the executor.
	Incomplete bool `json:"incomplete,omitempty"`
}

// logFileBytes returns how many bytes of the log file st covers.
func (st State) logFileBytes() int64 {
	if st.Closed && st.StoredHead > 0 {
		return st.StoredHead
	}
	return st.MaskedBytes
}

// storedTail returns where the tail bytes of a stored log that is not all
// in the log file start (a position past the head), and how many there are.
func (st State) storedTail() (from, n int64) {
	n = st.MaskedBytes - st.StoredHead - int64(len(st.Notice))
	return st.TailBytes - n, n
}

// Cut returns how many masked bytes of st's tail fall outside the tail
// limit: the bytes cut from the middle of the stored log.
func (st State) Cut() int64 {
	if st.TailLimit <= 0 || st.TailBytes <= st.TailLimit {
		return 0
	}
	return st.TailBytes - st.TailLimit
}

// Spool is the spool directory.
type Spool struct {
	dir string
	// blocks are the buffers of the runs' writes behind (behind.go), kept
	// here rather than by each run, so that an idle run holds none.
	blocks sync.Pool
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
	var runs []string
	for _, e := range entries {
		if e.IsDir() && ids.ValidRunID(e.Name()) {
			runs = append(runs, e.Name())
		}
	}
	return runs, nil
}

// Run is one run's spool files. Its methods are safe for concurrent use,
// but Append, Truncate and Commit are meant for one writer at a time.
type Run struct {
	dir string
	sf  *stateFile

	mu    sync.Mutex
	f     *os.File
	size  int64
	state State
	// tail is the open tail segment (nil until needed); tailSize its size
	// in bytes, committed or not.
	tail     *os.File
	tailSize int64
	// sum is the SHA-256 of the log file's bytes [0, summed), kept up to
	// date by Write for a log written from its start in this process, so
	// that SHA256 at close reads back only what it did not see (all of a
	// reopened run's earlier bytes); nil when it must start over. It is
	// hashed behind the writer (see behind.go): it holds all of [0,
	// summed) once the blocks are flushed.
	sum    *digest
	summed int64
	// tsum is the SHA-256 of the log file's bytes [0, summed) followed by
	// the tail segment's first tsummed bytes: kept up to date by WriteTail
	// while the tail is written from its start right after a head hashed
	// whole, so that a log that was not cut has its digest once
	// AppendTail put its tail after its head (nil otherwise).
	tsum    *digest
	tsummed int64
	// wb writes the log file's and the tail segment's bytes, and hashes
	// them, behind Write and WriteTail.
	wb behind
}

// OpenRun opens (creating if needed) the spool of run id. The log file is
// truncated to the committed State.MaskedBytes.
func (s *Spool) OpenRun(id string) (*Run, error) {
	if !ids.ValidRunID(id) {
		return nil, ErrInvalidRunID
	}
	dir := filepath.Join(s.dir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open run spool: %w", err)
	}
	r := &Run{dir: dir, state: State{RunID: id}, sf: &stateFile{path: filepath.Join(dir, stateName)}}
	r.wb.init(&s.blocks)
	if err := r.sf.read(&r.state); err != nil {
		return nil, err
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
	if st.Size() < r.state.logFileBytes() {
		f.Close()
		return nil, fmt.Errorf("open run log: %s has %d bytes, its state says %d were committed", f.Name(), st.Size(), r.state.logFileBytes())
	}
	r.f = f
	r.size = st.Size()
	if err := r.Truncate(r.state.logFileBytes()); err != nil {
		f.Close()
		return nil, err
	}
	if r.size == 0 {
		r.sum = &digest{h: sha256.New()}
	}
	if err := r.openTail(); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func tailName(n uint64) string { return tailPrefix + strconv.FormatUint(n, 10) }

// openTail opens the tail segment named by the state, truncated to its
// committed bytes, and removes leftover segments (all of them once the log
// is closed: its tail is then in the log file).
func (r *Run) openTail() error {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("open tail segment: %w", err)
	}
	current := tailName(r.state.TailSegment)
	keep := !r.state.Closed || r.state.StoredHead > 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tailPrefix) || (e.Name() == current && keep) {
			continue
		}
		if err := os.Remove(filepath.Join(r.dir, e.Name())); err != nil {
			return fmt.Errorf("remove leftover tail segment: %w", err)
		}
	}
	committed := r.state.TailBytes - r.state.TailBase
	if !keep || committed < 0 {
		if committed < 0 {
			return fmt.Errorf("open tail segment: state has tail_bytes %d below tail_base %d", r.state.TailBytes, r.state.TailBase)
		}
		return nil
	}
	f, err := os.OpenFile(filepath.Join(r.dir, current), os.O_RDWR, 0o600)
	if errors.Is(err, fs.ErrNotExist) && committed == 0 {
		return nil // created on the first write
	}
	if err != nil {
		return fmt.Errorf("open tail segment: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open tail segment: %w", err)
	}
	if info.Size() < committed {
		f.Close()
		return fmt.Errorf("open tail segment: %s has %d bytes, its state says %d were committed", f.Name(), info.Size(), committed)
	}
	if err := f.Truncate(committed); err != nil {
		f.Close()
		return fmt.Errorf("truncate tail segment: %w", err)
	}
	r.tail, r.tailSize = f, committed
	return nil
}

// WriteTail appends p to the tail segment, not durably until Commit (nor
// in the file until then: see behind.go).
func (r *Run) WriteTail(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tail == nil {
		f, err := os.OpenFile(filepath.Join(r.dir, tailName(r.state.TailSegment)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return 0, fmt.Errorf("create tail segment: %w", err)
		}
		r.tail, r.tailSize = f, 0
	}
	d := r.tailDigestLocked()
	if err := r.wb.write(r.tail, &r.wb.tailErr, r.tailSize, p, d); err != nil {
		return 0, fmt.Errorf("write tail segment: %w", err)
	}
	if d != nil {
		r.tsummed += int64(len(p))
	}
	r.tailSize += int64(len(p))
	return len(p), nil
}

// tailDigestLocked returns the digest to hash bytes written to the tail
// segment at its end into, after the head (see Run.tsum), nil for none:
// it starts once the first tail byte follows a head hashed whole, and
// stops for good at any other write.
func (r *Run) tailDigestLocked() *digest {
	switch {
	case r.tsum != nil && r.tsummed == r.tailSize:
	case r.tailSize == 0 && r.state.TailBase == 0 && r.sum != nil && r.summed == r.size:
		r.tsum, r.tsummed = &digest{}, 0
		r.wb.cloneDigest(r.sum, r.tsum)
	default:
		r.tsum = nil
	}
	return r.tsum
}

// cloneHash returns a copy of h's state, nil if it cannot.
func cloneHash(h hash.Hash) hash.Hash {
	if c, ok := h.(hash.Cloner); ok {
		if d, err := c.Clone(); err == nil {
			return d
		}
	}
	return nil
}

// StoredSHA256 returns the hex SHA-256 of the log file's bytes followed
// by notice and the tail bytes [from, from+n) (positions past the head):
// of the stored log a closed state with StoredHead describes. When notice
// is empty and those are all the tail's bytes, hashed as they were written
// right after a head hashed whole, nothing is read back; otherwise the
// tail bytes are (and the log file's bytes not hashed as written).
func (r *Run) StoredSHA256(notice []byte, from, n int64) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.wb.flushed(); err != nil {
		return "", fmt.Errorf("hash spool: %w", err)
	}
	hashed := r.sum != nil && r.sum.h != nil && r.summed == r.size
	if len(notice) == 0 && r.tsum != nil && r.tsum.h != nil && hashed && from == 0 && r.state.TailBase == 0 && n == r.tsummed {
		return hex.EncodeToString(r.tsum.h.Sum(nil)), nil
	}
	var h hash.Hash
	if hashed {
		h = cloneHash(r.sum.h)
	}
	if h == nil {
		h = sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(r.f, 0, r.size)); err != nil {
			return "", fmt.Errorf("hash spool: %w", err)
		}
	}
	h.Write(notice)
	if n > 0 {
		base := r.state.TailBase
		if r.tail == nil || from < base || from+n > base+r.tailSize {
			return "", fmt.Errorf("hash spool: tail bytes %d to %d are not in the tail segment (%d to %d)", from, from+n, base, base+r.tailSize)
		}
		if _, err := io.Copy(h, io.NewSectionReader(r.tail, from-base, n)); err != nil {
			return "", fmt.Errorf("hash spool: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ReadStoredAt reads the log from off: the bytes of the log file, or, once
// the log is closed with StoredHead (see State), the stored log: its head
// in the log file, the notice, its tail in the tail segment. Errors are
// those of os.File.ReadAt, unwrapped, so that io.EOF is io.EOF for
// io.SectionReader.
func (r *Run) ReadStoredAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	st, tail := r.state, r.tail
	r.mu.Unlock()
	if !st.Closed || st.StoredHead == 0 {
		return r.f.ReadAt(p, off)
	}
	notice := []byte(st.Notice)
	from, n := st.storedTail()
	read := 0
	for len(p) > 0 {
		var k int
		var err error
		switch {
		case off < st.StoredHead:
			k, err = r.f.ReadAt(p[:min(int64(len(p)), st.StoredHead-off)], off)
			if err == io.EOF && k > 0 {
				err = nil
			}
		case off < st.StoredHead+int64(len(notice)):
			k = copy(p, notice[off-st.StoredHead:])
		case off < st.MaskedBytes:
			if tail == nil {
				return read, fmt.Errorf("read stored log: no tail segment")
			}
			pos := from + off - st.StoredHead - int64(len(notice))
			k, err = tail.ReadAt(p[:min(int64(len(p)), from+n-pos)], pos-st.TailBase)
			if err == io.EOF && k > 0 {
				err = nil
			}
		default:
			return read, io.EOF
		}
		read += k
		p, off = p[k:], off+int64(k)
		if err != nil {
			return read, err
		}
	}
	return read, nil
}

// TailEnd returns the position, past the head, after the last byte written
// to the tail segment, committed or not.
func (r *Run) TailEnd() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state.TailBase + r.tailSize
}

// ReadTailAt reads tail bytes from off, a position past the head (at or
// above State.TailBase). Errors are those of os.File.ReadAt, unwrapped.
func (r *Run) ReadTailAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	f, base := r.tail, r.state.TailBase
	r.mu.Unlock()
	if off < base {
		return 0, fmt.Errorf("read tail segment: position %d was compacted away (segment starts at %d)", off, base)
	}
	if f == nil {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	return f.ReadAt(p, off-base)
}

// TruncateTail cuts the tail segment back to end (a position past the
// head), dropping bytes not committed.
func (r *Run) TruncateTail(end int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tail == nil {
		return nil
	}
	r.wb.flush()
	defer r.wb.clearErr(&r.wb.tailErr, end-r.state.TailBase)
	if r.tsum != nil && end-r.state.TailBase < r.tsummed {
		r.tsum = nil // the hashed bytes change
	}
	if err := r.tail.Truncate(end - r.state.TailBase); err != nil {
		return fmt.Errorf("truncate tail segment: %w", err)
	}
	r.tailSize = end - r.state.TailBase
	return nil
}

// CompactTail replaces the tail segment by a new one holding only the
// tail bytes from position from on, records st with it, and returns the
// state recorded: StartCompaction then Finish. No write to the tail
// segment may run meanwhile.
func (r *Run) CompactTail(st State, from int64) (State, error) {
	c, err := r.StartCompaction(st, from)
	if err != nil {
		return State{}, err
	}
	return c.Finish()
}

// TailCompaction is a compaction of the tail segment in progress.
type TailCompaction struct {
	r        *Run
	st       State // to record, naming the new segment
	f        *os.File
	old      *os.File
	oldBase  int64
	copiedTo int64 // position past the head up to which f holds the bytes
}

// StartCompaction begins replacing the tail segment by a new one holding
// only the tail bytes from position from on, for state st (the last
// committed one: st.TailBytes is the committed end of the segment). It
// copies the bytes written so far into the new segment and makes them
// durable; writes to the tail segment may go on meanwhile (Finish copies
// them), but not a commit. Finish or Abort must follow.
func (r *Run) StartCompaction(st State, from int64) (*TailCompaction, error) {
	r.mu.Lock()
	err := r.wb.flushed()
	old, end, oldBase := r.tail, r.state.TailBase+r.tailSize, r.state.TailBase
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("compact tail segment: %w", err)
	}
	if old == nil || from <= oldBase || from > st.TailBytes || end < st.TailBytes || st.TailBase != oldBase {
		return nil, fmt.Errorf("compact tail segment: nothing to compact from %d (segment from %d to %d, committed %d)", from, oldBase, end, st.TailBytes)
	}
	st.TailSegment, st.TailBase = st.TailSegment+1, from
	name := filepath.Join(r.dir, tailName(st.TailSegment))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("compact tail segment: %w", err)
	}
	c := &TailCompaction{r: r, st: st, f: f, old: old, oldBase: oldBase, copiedTo: from}
	err = c.copyTo(end)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		c.Abort()
		return nil, fmt.Errorf("compact tail segment: %w", err)
	}
	return c, nil
}

// copyTo appends to the new segment the bytes of the old one up to end
// (a position past the head), copied by the kernel where it can.
func (c *TailCompaction) copyTo(end int64) error {
	if end <= c.copiedTo {
		return nil
	}
	// A descriptor of its own, whose offset nobody else uses.
	src, err := os.Open(c.old.Name())
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := src.Seek(c.copiedTo-c.oldBase, io.SeekStart); err != nil {
		return err
	}
	n, err := c.f.ReadFrom(io.LimitReader(src, end-c.copiedTo))
	c.copiedTo += n
	if err == nil && c.copiedTo < end {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Finish copies the tail bytes written since StartCompaction (not
// committed, so not synced), records the state naming the new segment,
// switches to it and removes the old one. No write to the tail segment
// may run meanwhile.
func (c *TailCompaction) Finish() (State, error) {
	r := c.r
	r.mu.Lock()
	err := r.wb.flushed()
	end := r.state.TailBase + r.tailSize
	same := r.tail == c.old
	r.mu.Unlock()
	if !same {
		c.Abort()
		return State{}, errors.New("compact tail segment: the segment changed meanwhile")
	}
	if err != nil {
		c.Abort()
		return State{}, fmt.Errorf("compact tail segment: %w", err)
	}
	if err := c.copyTo(end); err != nil {
		c.Abort()
		return State{}, fmt.Errorf("compact tail segment: %w", err)
	}
	if err := r.SaveState(c.st); err != nil {
		// the state may or may not name the new segment: keep both; the
		// one it does not name is removed at the next open.
		c.f.Close()
		return State{}, fmt.Errorf("compact tail segment: %w", err)
	}
	r.mu.Lock()
	r.tail, r.tailSize = c.f, end-c.st.TailBase
	r.tsum = nil // the segment starts past the head's end now
	r.mu.Unlock()
	// The new segment is recorded: the old one is a leftover, removed here
	// or at the next open.
	_ = c.old.Close()
	_ = os.Remove(c.old.Name())
	return c.st, nil
}

// Abort drops a compaction not finished: the new segment is removed.
func (c *TailCompaction) Abort() {
	c.f.Close()
	os.Remove(c.f.Name())
}

// RemoveTail closes and deletes the tail segment, once the log is closed
// (its kept bytes are then in the log file).
func (r *Run) RemoveTail() error {
	r.mu.Lock()
	r.wb.flush()
	f := r.tail
	r.tail, r.tailSize, r.tsum = nil, 0, nil
	r.mu.Unlock()
	if f == nil {
		return nil
	}
	_ = f.Close()
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove tail segment: %w", err)
	}
	return nil
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

// Write appends p to the log file, not durably until Commit (nor in the
// file until then: see behind.go).
func (r *Run) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tsum = nil // a head byte after tail bytes: the order tsum hashed is not the log's
	var d *digest
	if r.sum != nil && r.summed == r.size {
		d = r.sum
	}
	if err := r.wb.write(r.f, &r.wb.logErr, r.size, p, d); err != nil {
		return 0, fmt.Errorf("write spool: %w", err)
	}
	if d != nil {
		r.summed += int64(len(p))
	}
	r.size += int64(len(p))
	return len(p), nil
}

// SHA256 returns the hex SHA-256 of the log file's bytes [0, Size()). Bytes
// written by Write since the run's spool was created empty were hashed as
// they were written; only the others are read back from the file.
func (r *Run) SHA256() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.wb.flushed(); err != nil {
		return "", fmt.Errorf("hash spool: %w", err)
	}
	if r.sum == nil || r.sum.h == nil {
		r.sum, r.summed = &digest{h: sha256.New()}, 0
	}
	if r.summed < r.size {
		if _, err := io.Copy(r.sum.h, io.NewSectionReader(r.f, r.summed, r.size-r.summed)); err != nil {
			r.sum = nil
			return "", fmt.Errorf("hash spool: %w", err)
		}
		r.summed = r.size
	}
	return hex.EncodeToString(r.sum.h.Sum(nil)), nil
}

// Truncate cuts the log file to n bytes, dropping bytes not committed.
func (r *Run) Truncate(n int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wb.flush()
	defer r.wb.clearErr(&r.wb.logErr, n)
	if n < r.summed {
		r.sum, r.tsum = nil, nil // the hashed bytes change
	}
	if err := r.f.Truncate(n); err != nil {
		return fmt.Errorf("truncate spool: %w", err)
	}
	r.size = n
	return nil
}

// ReadAt reads log bytes from the file: the committed ones (bytes written
// and not yet committed may still be behind, see behind.go). Its errors
// are those of os.File.ReadAt, unwrapped, so that io.EOF is io.EOF for
// io.SectionReader.
func (r *Run) ReadAt(p []byte, off int64) (int, error) {
	return r.f.ReadAt(p, off)
}

// SyncLog makes the log and tail bytes written so far durable: it waits
// for the writes behind (see behind.go), then fdatasyncs the files.
func (r *Run) SyncLog() error {
	if err := r.wb.flushed(); err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	if err := fdatasync(r.f); err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	r.mu.Lock()
	tail := r.tail
	r.mu.Unlock()
	if tail != nil {
		if err := fdatasync(tail); err != nil {
			return fmt.Errorf("sync tail segment: %w", err)
		}
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
	if err := r.sf.save(st); err != nil {
		return fmt.Errorf("save run state: %w", err)
	}
	r.mu.Lock()
	r.state = st
	r.mu.Unlock()
	return nil
}

// Remove deletes the run's spool files. The log stays readable through
// ReadAt until Close.
func (r *Run) Remove() error {
	if err := os.RemoveAll(r.dir); err != nil {
		return fmt.Errorf("remove run spool: %w", err)
	}
	return nil
}

// Close closes the log file and the tail segment.
func (r *Run) Close() error {
	r.mu.Lock()
	r.wb.flush()
	tail := r.tail
	r.tail = nil
	r.mu.Unlock()
	if tail != nil {
		_ = tail.Close()
	}
	r.sf.close()
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	return nil
}
