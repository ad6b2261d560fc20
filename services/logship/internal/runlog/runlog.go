// Package runlog is the life of a run's log inside logship: masking the
// chunks an executor ships, committing them to the spool, acknowledging
// them, uploading the masked log to S3, and serving it to readers.
//
// # Acknowledgements and the masker
//
// A run has one mask.Writer, which keeps its automaton state across chunks
// so that a secret split over several chunks is still masked. The writer
// holds back the last bytes of the stream that could still begin a secret
// (and a mask whose covered run could still grow); those bytes exist only in
// memory. Writing them to disk raw would put secret material on disk, so
// logship never does. Instead it acknowledges a chunk only at a clean
// point: when, after the chunk, the masker holds nothing back, every byte of
// every chunk up to it has been masked into the spool, and the masker's
// state is that of a fresh masker. At a clean point logship fsyncs the
// spool, records (sequence, masked byte offset) in the run's state file,
// and only then sends Ack{through_sequence}.
//
// Chunks received after the last clean point are written to the spool but
// not acknowledged. Whenever a Ship stream (re)opens a run, in the same
// process or after a restart, logship truncates the spool back to the
// recorded offset, starts a fresh masker, and answers Opened with
// next_sequence one past the recorded sequence; the executor resends from
// there. Since the masker restarts exactly where a fresh masker would be,
// the log loses nothing and duplicates nothing, whatever the chunking.
//
// Whether the masker is clean is found without looking inside it: a probe
// writer replays the raw chunks since the last clean point (kept in memory
// only) and is flushed; the point is clean if the flush releases nothing.
// When chunk boundaries fall inside possible secrets for a long stretch (an
// adversarial stream), acknowledgements wait; the executor's bounded
// unacknowledged window then slows it down, and Close acknowledges all.
//
// Readers (Tail, the uploader) see only the committed bytes, so a rollback
// never takes back a byte anyone has seen.
//
// # Uploads
//
// Each run has an uploader goroutine. Every chunk interval it uploads the
// committed bytes not uploaded yet as the next live chunk object; once the
// log is closed it uploads the final object, then removes the run's spool.
// S3 failures are retried with exponential backoff, for ever; the run is
// not failed, and Ship keeps acknowledging from the spool. Upload progress
// is in the state file, so a restart resumes it.
package runlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hangar-dev/hangar/services/logship/internal/mask"
	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// Errors returned to the Ship and Tail handlers.
var (
	// ErrGap: a chunk or Close skips sequence numbers.
	ErrGap = errors.New("sequence gap")
	// ErrSuperseded: another Ship stream opened the run since this one.
	ErrSuperseded = errors.New("run reopened by another stream")
	// ErrClosed: a new chunk for a closed log.
	ErrClosed = errors.New("run log already closed")
	// ErrNotFound: the run is not in the spool.
	ErrNotFound = errors.New("no such run")
	// ErrInvalidRunID: see spool.ValidRunID.
	ErrInvalidRunID = spool.ErrInvalidRunID
)

// Store is the part of the S3 log store used here.
type Store interface {
	PutChunk(ctx context.Context, runID string, n uint64, body io.ReadSeeker, size int64) error
	PutFinal(ctx context.Context, runID string, body io.ReadSeeker, f s3log.Final) error
	FinalKey(runID string) string
}

// Options configure a Manager.
type Options struct {
	Spool *spool.Spool
	Store Store
	// MinSecretLength is the shortest secret masked (mask.Options.MinLength).
	MinSecretLength int
	// ChunkInterval is how often live chunks are uploaded.
	ChunkInterval time.Duration
	// CloseWait bounds how long Close waits for the final upload.
	CloseWait time.Duration
	// RetryMin and RetryMax bound the backoff between failed uploads.
	RetryMin, RetryMax time.Duration
	// MaxChunkObject caps the size of one live chunk object (default 16 MiB).
	MaxChunkObject int64
	// FinishedRuns is how many finished runs are remembered, to answer a
	// late reopen (default 1024).
	FinishedRuns int
	Logger       *slog.Logger
	Registry     prometheus.Registerer
}

// Secret is one value to mask.
type Secret struct {
	Name  string
	Value []byte
}

// OpenRequest opens or resumes a run's log.
type OpenRequest struct {
	RunID, PoolID, StackID string
	Secrets                []Secret
}

// Closed describes a closed log.
type Closed struct {
	Key    string
	Bytes  int64
	SHA256 string
}

type metrics struct {
	bytesIn, bytesOut, masks prometheus.Counter
	spoolBytes, runsOpen     prometheus.Gauge
}

// Manager holds the runs of this logship.
type Manager struct {
	opts Options
	log  *slog.Logger
	met  metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex
	runs          map[string]*run
	finished      map[string]finishedRun
	finishedOrder []string
}

type finishedRun struct {
	closed  Closed
	lastSeq uint64
}

// New loads the runs left in the spool (resuming their uploads) and returns
// the Manager. Close stops it.
func New(opts Options) (*Manager, error) {
	if opts.MaxChunkObject <= 0 {
		opts.MaxChunkObject = 16 << 20
	}
	if opts.FinishedRuns <= 0 {
		opts.FinishedRuns = 1024
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 200 * time.Millisecond
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(opts.RetryMin, 30*time.Second)
	}
	if opts.ChunkInterval <= 0 {
		opts.ChunkInterval = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{opts: opts, log: opts.Logger, runs: map[string]*run{}, finished: map[string]finishedRun{}}
	m.met = metrics{
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_bytes_in_total",
			Help: "Raw log bytes received from executors (resends not counted)."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_bytes_out_total",
			Help: "Masked log bytes committed to the spool."}),
		masks: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_masks_applied_total",
			Help: "Secret occurrences replaced by the mask in committed log bytes."}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_logship_spool_bytes",
			Help: "Committed masked bytes in the spool, waiting for their final upload."}),
		runsOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_logship_runs_open",
			Help: "Run logs opened and not yet closed."}),
	}
	if opts.Registry != nil {
		for _, c := range []prometheus.Collector{m.met.bytesIn, m.met.bytesOut, m.met.masks, m.met.spoolBytes, m.met.runsOpen} {
			if err := opts.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("runlog metrics: %w", err)
			}
		}
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())

	ids, err := opts.Spool.Runs()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		sp, err := opts.Spool.OpenRun(id)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("load spooled run %s: %w", id, err)
		}
		r := m.newRun(id, sp)
		st := sp.State()
		m.met.spoolBytes.Add(float64(st.MaskedBytes))
		if !st.Closed {
			m.met.runsOpen.Inc()
		}
		m.runs[id] = r
		m.log.Info("resuming spooled run", "run_id", id, "acked_sequence", st.AckedSequence,
			"masked_bytes", st.MaskedBytes, "uploaded_bytes", st.UploadedBytes, "closed", st.Closed)
		m.startUploader(r)
		if st.Closed {
			r.wake()
		}
	}
	return m, nil
}

// Close stops the uploaders and closes the spool files. Runs not finished
// stay in the spool for the next start.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.runs {
		r.mu.Lock()
		r.finished = true // no more writes through stale sessions
		r.releaseLocked(false)
		r.mu.Unlock()
	}
}

// run is one run's log.
type run struct {
	id string
	m  *Manager
	sp *spool.Run

	kick      chan struct{}
	finalDone chan struct{}

	mu    sync.Mutex
	state spool.State // last committed
	gen   uint64      // incremented by each Open
	set   *mask.Set
	w     *mask.Writer
	// pending are the raw chunks since the last clean point: in memory only.
	pending      [][]byte
	lastReceived uint64
	masksDone    int64 // masker's mask count at the last commit
	shortLogged  bool
	changed      chan struct{} // closed and replaced when state grows
	finished     bool          // final object uploaded (or manager closed)
	readers      int
	fileClosed   bool
}

func (m *Manager) newRun(id string, sp *spool.Run) *run {
	return &run{id: id, m: m, sp: sp, state: sp.State(), kick: make(chan struct{}, 1),
		finalDone: make(chan struct{}), changed: make(chan struct{})}
}

func (r *run) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Session is one Ship stream's hold on a run.
type Session struct {
	r   *run
	gen uint64
	fin *finishedRun // set when the run had finished before the Open
}

// Open opens or resumes a run's log for a Ship stream and returns the
// next sequence number expected. Any previous stream's session on the run
// is superseded.
func (m *Manager) Open(req OpenRequest) (*Session, uint64, error) {
	if !spool.ValidRunID(req.RunID) {
		return nil, 0, ErrInvalidRunID
	}
	values := make([][]byte, len(req.Secrets))
	for i, s := range req.Secrets {
		values[i] = s.Value
	}
	set, rep := mask.NewSet(values, mask.Options{MinLength: m.opts.MinSecretLength})

	m.mu.Lock()
	if f, ok := m.finished[req.RunID]; ok {
		m.mu.Unlock()
		return &Session{fin: &f}, f.lastSeq + 1, nil
	}
	r := m.runs[req.RunID]
	if r == nil {
		if m.ctx.Err() != nil {
			m.mu.Unlock()
			return nil, 0, errors.New("logship is stopping")
		}
		sp, err := m.opts.Spool.OpenRun(req.RunID)
		if err != nil {
			m.mu.Unlock()
			return nil, 0, err
		}
		r = m.newRun(req.RunID, sp)
		r.state.PoolID, r.state.StackID = req.PoolID, req.StackID
		m.runs[req.RunID] = r
		m.met.runsOpen.Inc()
		m.startUploader(r)
	}
	m.mu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		if !r.state.Closed || m.ctx.Err() != nil {
			return nil, 0, errors.New("logship is stopping")
		}
		f := finishedRun{closed: r.closedLocked(), lastSeq: r.state.AckedSequence}
		return &Session{fin: &f}, f.lastSeq + 1, nil
	}
	r.gen++
	if !r.shortLogged && len(rep.TooShort) > 0 {
		names := make([]string, len(rep.TooShort))
		for i, idx := range rep.TooShort {
			names[i] = req.Secrets[idx].Name
		}
		m.log.Warn("secrets shorter than the minimum length are not masked", "run_id", r.id,
			"names", names, "min_length", m.opts.MinSecretLength)
		r.shortLogged = true
	}
	if !r.state.Closed {
		if err := r.sp.Truncate(r.state.MaskedBytes); err != nil {
			return nil, 0, err
		}
		r.set, r.w = set, set.NewWriter(r.sp)
		r.pending, r.lastReceived, r.masksDone = nil, r.state.AckedSequence, 0
	}
	return &Session{r: r, gen: r.gen}, r.state.AckedSequence + 1, nil
}

// Chunk stores one chunk. It returns the sequence to acknowledge through,
// and whether to send that acknowledgement now.
func (s *Session) Chunk(seq uint64, data []byte) (uint64, bool, error) {
	if s.fin != nil {
		if seq <= s.fin.lastSeq {
			return s.fin.lastSeq, true, nil
		}
		return 0, false, ErrClosed
	}
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != s.gen || r.finished && !r.state.Closed {
		return 0, false, ErrSuperseded
	}
	if r.state.Closed {
		if seq <= r.state.AckedSequence {
			return r.state.AckedSequence, true, nil
		}
		return 0, false, ErrClosed
	}
	if seq <= r.lastReceived {
		return r.state.AckedSequence, true, nil // a resend: stored once
	}
	if seq != r.lastReceived+1 {
		return 0, false, fmt.Errorf("%w: chunk %d, expected %d", ErrGap, seq, r.lastReceived+1)
	}
	if _, err := r.w.Write(data); err != nil {
		r.gen++ // the masker is unusable: the executor must reopen
		return 0, false, fmt.Errorf("store chunk %d: %w", seq, err)
	}
	r.pending = append(r.pending, bytes.Clone(data))
	r.lastReceived = seq
	r.m.met.bytesIn.Add(float64(len(data)))
	if !r.cleanLocked() {
		return r.state.AckedSequence, false, nil
	}
	st := r.state
	st.AckedSequence, st.MaskedBytes = seq, r.sp.Size()
	if err := r.commitLocked(st); err != nil {
		r.gen++
		return 0, false, fmt.Errorf("commit chunk %d: %w", seq, err)
	}
	r.pending = r.pending[:0]
	return seq, true, nil
}

// cleanLocked reports whether the masker holds nothing back: a fresh
// writer fed the raw bytes since the last clean point releases nothing when
// flushed.
func (r *run) cleanLocked() bool {
	probe := r.set.NewWriter(io.Discard)
	for _, p := range r.pending {
		if _, err := probe.Write(p); err != nil {
			return false
		}
	}
	before := probe.Stats()
	if err := probe.Flush(); err != nil {
		return false
	}
	after := probe.Stats()
	return after.BytesOut == before.BytesOut && after.Masks == before.Masks
}

// commitLocked makes st durable and visible.
func (r *run) commitLocked(st spool.State) error {
	if err := r.sp.Commit(st); err != nil {
		return err
	}
	grown := st.MaskedBytes - r.state.MaskedBytes
	r.state = st
	r.m.met.bytesOut.Add(float64(grown))
	r.m.met.spoolBytes.Add(float64(grown))
	if r.w != nil {
		masks := r.w.Stats().Masks
		r.m.met.masks.Add(float64(masks - r.masksDone))
		r.masksDone = masks
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// Close ends the log: flushes the masker, commits, and waits for the final
// upload up to the CloseWait bound. It answers with the final object's key
// even if the upload is still being retried.
func (s *Session) Close(ctx context.Context, lastSeq uint64) (Closed, error) {
	if s.fin != nil {
		if lastSeq != s.fin.lastSeq {
			return Closed{}, fmt.Errorf("%w: close at %d, log was closed at %d", ErrGap, lastSeq, s.fin.lastSeq)
		}
		return s.fin.closed, nil
	}
	r := s.r
	r.mu.Lock()
	if r.gen != s.gen || r.finished && !r.state.Closed {
		r.mu.Unlock()
		return Closed{}, ErrSuperseded
	}
	if r.state.Closed {
		if lastSeq != r.state.AckedSequence {
			r.mu.Unlock()
			return Closed{}, fmt.Errorf("%w: close at %d, log was closed at %d", ErrGap, lastSeq, r.state.AckedSequence)
		}
	} else {
		if lastSeq != r.lastReceived {
			r.mu.Unlock()
			return Closed{}, fmt.Errorf("%w: close at %d, last chunk received is %d", ErrGap, lastSeq, r.lastReceived)
		}
		if err := r.closeLocked(); err != nil {
			r.gen++
			r.mu.Unlock()
			return Closed{}, err
		}
	}
	closed := r.closedLocked()
	r.mu.Unlock()
	r.wake()

	wait := time.NewTimer(r.m.opts.CloseWait)
	defer wait.Stop()
	select {
	case <-r.finalDone:
	case <-wait.C:
		r.m.log.Warn("final log not uploaded yet; answering Closed, the upload is retried in the background",
			"run_id", r.id, "key", closed.Key)
	case <-ctx.Done():
		return Closed{}, fmt.Errorf("close: %w", ctx.Err())
	}
	return closed, nil
}

func (r *run) closeLocked() error {
	if err := r.w.Close(); err != nil {
		return fmt.Errorf("close masker: %w", err)
	}
	size := r.sp.Size()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r.sp, 0, size)); err != nil {
		return fmt.Errorf("hash log: %w", err)
	}
	st := r.state
	st.AckedSequence, st.MaskedBytes, st.Closed, st.SHA256 = r.lastReceived, size, true, hex.EncodeToString(h.Sum(nil))
	if err := r.commitLocked(st); err != nil {
		return fmt.Errorf("commit close: %w", err)
	}
	r.m.met.runsOpen.Dec()
	r.w, r.set, r.pending = nil, nil, nil
	return nil
}

func (r *run) closedLocked() Closed {
	return Closed{Key: r.m.opts.Store.FinalKey(r.id), Bytes: r.state.MaskedBytes, SHA256: r.state.SHA256}
}

// releaseLocked drops a reader (if reader) and closes the spool file once
// the run is finished and has no readers.
func (r *run) releaseLocked(reader bool) {
	if reader {
		r.readers--
	}
	if r.finished && r.readers == 0 && !r.fileClosed {
		r.fileClosed = true
		if err := r.sp.Close(); err != nil {
			r.m.log.Warn("closing spool file", "run_id", r.id, "err", err)
		}
	}
}
