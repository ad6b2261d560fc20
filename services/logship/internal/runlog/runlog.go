// Package runlog is the life of a run's log inside logship: masking the
// chunks an executor ships, committing them to the spool, acknowledging
// them, uploading the masked log to S3, and serving it to readers.
//
// # The maskers, one per stream
//
// A run has one mask.Writer per stream (stdout, stderr, system, and one
// for chunks of no stream), all on the run's mask.Set. Each keeps its
// automaton state across the chunks of its stream, so a secret that is
// contiguous within one stream is masked however it is cut into chunks
// and whatever the other streams print in between: a secret printed to
// stdout in two writes with a stderr line between them (a shell's "+ cmd"
// trace, say) is masked. (A single masker fed the chunks of every stream
// in arrival order would see the secret's halves apart and mask neither.) A secret is not looked for across streams: one that only
// exists once stdout and stderr bytes are put together is not masked.
//
// The stored log stays one stream. Each masker writes into the run's
// spool (see Size limit) as soon as bytes can no longer begin a secret, so
// the log holds the chunks' masked bytes in arrival order, but for the
// bytes a masker holds back (at most the longest pattern's length minus
// one, the possible beginning of a secret, and a pending mask): they come
// out with a later chunk of their stream (or a flush), after the bytes
// other streams released meanwhile. Ordering guarantee: the bytes of each
// stream appear in the log exactly in order, each exactly once (masked);
// across streams, bytes appear in arrival order except that a fragment a
// masker held back (at most the longest pattern's length minus one bytes)
// may appear after output of other streams that arrived after it. No byte
// ever appears before a byte that arrived earlier in its own stream.
// Example, "hunter2" being a secret: stdout "a hunte", then stderr "x\n",
// then stdout "r2 b\n" are stored as "a x\n****** b\n"; had stdout gone
// on with "rx b\n" instead, "a x\nhunterx b\n".
//
// A masker that holds bytes back while its stream stays silent would
// block acknowledgements (below) for ever while the other streams go on,
// and with them the executor, whose unacknowledged window is bounded. So
// once a run received idleFlushBytes (1 MiB) since the last chunk of a
// stream whose masker holds bytes back, that masker is flushed (its held
// bytes written, its automaton reset): a secret whose parts, in one
// stream, are more than a MiB of other streams' output apart is not
// masked. Close flushes every masker, in a fixed order: stdout, stderr,
// system, no stream.
//
// # Acknowledgements and the maskers
//
// The bytes a masker holds back exist only in memory. Writing them to
// disk raw would put secret material on disk, so logship never does.
// Instead it acknowledges a chunk only at a clean point: when, after the
// chunk, no stream's masker holds anything back, every byte of every
// chunk up to it has been masked into the spool, and every masker's
// state is that of a fresh masker. Session.Write masks a chunk into the
// spool (not durably) and notes whether it ends at a clean point, with the
// spool's sizes there. Session.Commit commits through the last clean point
// noted: it fsyncs the spool, records (sequence, masked byte offset) in the
// run's state file, and only then may Ack{through_sequence} be sent. The
// Ship handler commits in groups (after so many bytes or a short delay,
// see package ship); a commit holds only a per-run commit lock during its
// fsyncs, so Write goes on meanwhile. Bytes written after the clean point
// a commit records are fsynced with it but not recorded: they count as
// not written.
//
// Chunks received after the last commit are written to the spool but not
// acknowledged. Whenever a Ship stream (re)opens a run, in the same
// process or after a restart, logship truncates the spool back to the
// recorded offsets, starts fresh maskers, and answers Opened with
// next_sequence one past the recorded sequence; the executor resends from
// there. Since every masker restarts exactly where a fresh masker would
// be (the recorded point was clean for every stream), the log loses
// nothing and duplicates nothing, whatever the chunking and interleaving.
//
// Whether a stream's masker is clean is found without looking inside it,
// from its counters, after each chunk of that stream (a chunk changes its
// own stream's masker only; idle flushes aside): if it wrote no mask since
// the stream's last clean point, its output since then is its input
// unchanged, so it is clean exactly when it wrote as many bytes as it was
// given. Otherwise a probe writer replays the stream's raw chunks since
// its last clean point (kept in memory only) and is flushed; the point is
// clean for the stream if the flush releases nothing. The run is at a
// clean point when every stream is.
// When chunk boundaries fall inside possible secrets for a long stretch (an
// adversarial stream), acknowledgements wait; the executor's bounded
// unacknowledged window then slows it down, and Close acknowledges all.
//
// Readers (Tail, the uploader) see only the committed bytes, so a rollback
// never takes back a byte anyone has seen.
//
// # Size limit
//
// A run's stored log is at most Options.MaxLogBytes (HANGAR_LOG_MAX_BYTES)
// plus one notice line: its head and its tail. The limit is fixed in the
// run's state when the run is first opened. The maskers write into a sink
// that fills the spool's log file up to the head limit (the first half of
// the limit), then appends to the spool's tail segment, of which the last
// tail limit bytes (the other half) are kept; see package spool for how
// the tail segment rolls back to the last commit and stays bounded. A
// commit records both sizes (MaskedBytes, TailBytes) with acked_sequence,
// so acknowledgements, next_sequence and the rollback at reopen work on
// the head and the tail alike: a restart in the tail phase loses and
// duplicates nothing. The run goes on whatever its size: chunks are still
// acknowledged.
//
// At Close the log file becomes the stored log: the head, then, if bytes
// were cut, a newline and the line
//
//	[hangar] log truncated: <n> bytes cut from the middle (limit <limit> bytes)
//
// then the kept tail. Closed.Bytes, Closed.SHA256 and the final object's
// metadata describe exactly that; a log within the limit is stored whole,
// without the notice. Live chunk objects and Tail follow the log file's
// committed bytes, as before: they show the head live; the rest (the
// notice and the kept tail) appears when the log is closed.
//
// # Standard output
//
// With Options.Stdout set (HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT), each line
// of a run's masked stream (all of it: the limit applies to the stored
// log only) is also written there as one JSON object (see lines.go). A
// line's stream is that of the masker that wrote its bytes (none if
// several did), its time that of the chunk whose Write released its first
// byte. Only
// committed masked bytes are written, right after their commit and under
// the run's lock, so in order: bytes written after the last commit (not
// acknowledged) are never shown, a rollback takes nothing back, and a
// resend, dropped before the masker, shows nothing twice. Within one
// logship process each line is written exactly once.
//
// Across a restart: each commit records in the state the position up to
// which lines were written before that commit (and a clean shutdown
// records the current one). A new logship rewrites, from the spool, the
// lines from that position on, and holds the partial line at the end as
// before. So after a clean restart nothing is written twice; after a crash
// the lines of the last commit (a group of chunks, up to about a MiB) may
// be written again (at least once, never lost).
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

// Limits of Options.MaxLogBytes.
const (
	DefaultMaxLogBytes = 64 << 20
	MinMaxLogBytes     = 64 << 10
)

// Options configure a Manager.
type Options struct {
	Spool *spool.Spool
	Store Store
	// MinSecretLength is the shortest secret masked (mask.Options.MinLength).
	MinSecretLength int
	// DisableKnownFormats turns off the masking of undeclared well-known
	// credentials (mask.Options.DisableKnownFormats).
	DisableKnownFormats bool
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
	// MaxLogBytes limits the stored log of each run (head and tail kept);
	// default DefaultMaxLogBytes, at least MinMaxLogBytes.
	MaxLogBytes int64
	// Stdout, if set, receives each masked line of every run as JSON.
	Stdout   io.Writer
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Secret is one value to mask.
type Secret struct {
	Name  string
	Value []byte
}

// Stream names the source of a chunk, as in the JSON lines ("" if
// unknown).
type Stream string

// Streams of chunks.
const (
	StreamStdout Stream = "stdout"
	StreamStderr Stream = "stderr"
	StreamSystem Stream = "system"
)

// Chunk is one chunk of raw output.
type Chunk struct {
	Sequence uint64
	Stream   Stream
	Data     []byte
	// Time the executor read it; zero means unknown (now is used).
	Time time.Time
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
	// Truncated is the number of masked bytes cut from the middle.
	Truncated int64
}

type metrics struct {
	bytesIn, bytesOut, masks, truncated prometheus.Counter
	spoolBytes, runsOpen                prometheus.Gauge
}

// Manager holds the runs of this logship.
type Manager struct {
	opts Options
	log  *slog.Logger
	met  metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lines *lineSink // nil: no standard output

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
	if opts.MaxLogBytes == 0 {
		opts.MaxLogBytes = DefaultMaxLogBytes
	}
	if opts.MaxLogBytes < MinMaxLogBytes {
		return nil, fmt.Errorf("runlog: max log bytes %d below the minimum %d", opts.MaxLogBytes, MinMaxLogBytes)
	}
	m := &Manager{opts: opts, log: opts.Logger, runs: map[string]*run{}, finished: map[string]finishedRun{}}
	if opts.Stdout != nil {
		m.lines = &lineSink{log: opts.Logger, w: opts.Stdout}
	}
	m.met = metrics{
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_bytes_in_total",
			Help: "Raw log bytes received from executors (resends not counted)."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_bytes_out_total",
			Help: "Masked log bytes committed to the spool."}),
		masks: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_masks_applied_total",
			Help: "Secret occurrences replaced by the mask in committed log bytes."}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_bytes_truncated_total",
			Help: "Committed masked bytes cut from the middle of run logs longer than their limit (HANGAR_LOG_MAX_BYTES)."}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_logship_spool_bytes",
			Help: "Committed masked bytes in the spool, waiting for their final upload."}),
		runsOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_logship_runs_open",
			Help: "Run logs opened and not yet closed."}),
	}
	if opts.Registry != nil {
		for _, c := range []prometheus.Collector{m.met.bytesIn, m.met.bytesOut, m.met.masks, m.met.truncated, m.met.spoolBytes, m.met.runsOpen} {
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
		st := r.state
		m.met.spoolBytes.Add(float64(spooled(st)))
		if !st.Closed {
			m.met.runsOpen.Inc()
			if err := r.resumeLinesLocked(); err != nil {
				m.Close()
				_ = sp.Close()
				return nil, fmt.Errorf("load spooled run %s: %w", id, err)
			}
		}
		m.runs[id] = r
		m.log.Info("resuming spooled run", "run_id", id, "acked_sequence", st.AckedSequence,
			"masked_bytes", st.MaskedBytes, "tail_bytes", st.TailBytes, "uploaded_bytes", st.UploadedBytes, "closed", st.Closed)
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
		r.commitMu.Lock() // a commit in progress completes first
		r.mu.Lock()
		r.saveLinesLocked()
		r.finished = true // no more writes through stale sessions
		r.releaseLocked(false)
		r.mu.Unlock()
		r.commitMu.Unlock()
	}
}

// spooled is the number of bytes st keeps in the spool.
func spooled(st spool.State) int64 {
	if st.Closed {
		return st.MaskedBytes
	}
	return st.MaskedBytes + st.TailBytes - st.TailBase
}

// streamEnd is the committed size of the masked stream of a run not
// closed: head and tail, cut bytes included.
func streamEnd(st spool.State) int64 { return st.MaskedBytes + st.TailBytes }

// run is one run's log.
type run struct {
	id string
	m  *Manager
	sp *spool.Run

	kick      chan struct{}
	finalDone chan struct{}

	// commitMu serializes the writers of the run's state (commits, Open's
	// rollback, Close, upload progress, the clean shutdown) so that
	// state.json only ever moves forward; a commit holds it, but not mu,
	// while it fsyncs, so that chunks keep being masked into the spool
	// meanwhile. Lock order: commitMu, then mu.
	commitMu sync.Mutex

	mu    sync.Mutex
	state spool.State // last committed
	gen   uint64      // incremented by each Open
	set   *mask.Set
	// streams are the run's maskers, one per stream (see streamIndex), all
	// on set, each writing into the spool through its own sink.
	streams [numStreams]streamMasker
	// dirty is the number of streams whose masker holds something back:
	// the point after the last chunk is clean when it is zero.
	dirty int
	// in counts the raw bytes written since the Open, all streams.
	in int64
	// probe replays a stream's raw chunks since its last clean point to
	// tell whether its masker holds anything back (see streamCleanLocked);
	// reused, since a flushed writer is as a fresh one.
	probe *mask.Writer
	// clean is the last clean point.
	clean        cleanPoint
	lastReceived uint64
	// curTime is the time of the chunk being written: that of the masked
	// bytes the sinks receive.
	curTime time.Time
	// lines writes the committed masked lines to standard output (nil when
	// off); out holds the masked bytes written since the last commit, for
	// it, and outRuns says which stream's masker wrote them, and when.
	lines       *lineEmitter
	out         []byte
	outRuns     []outRun
	outSpare    []byte // a buffer for out, given back by the commit that took out
	masksDone   int64  // maskers' mask count at the last commit
	shortLogged bool
	changed     chan struct{} // closed and replaced when state grows
	finished    bool          // final object uploaded (or manager closed)
	readers     int
	fileClosed  bool
}

// numStreams is the number of streams masked apart: stdout, stderr,
// system, and chunks of no (or an unknown) stream.
const numStreams = 4

// streamOrder names the streams by index, in the order Close flushes
// their maskers.
var streamOrder = [numStreams]Stream{StreamStdout, StreamStderr, StreamSystem, ""}

// streamIndex returns the index of a chunk's stream in run.streams.
func streamIndex(s Stream) int {
	switch s {
	case StreamStdout:
		return 0
	case StreamStderr:
		return 1
	case StreamSystem:
		return 2
	}
	return 3
}

// idleFlushBytes bounds how far one stream's held-back bytes may trail the
// other streams: once the run received that many raw bytes since the last
// chunk of a stream whose masker still holds bytes back, that masker is
// flushed (see the package documentation). A variable for the tests.
var idleFlushBytes int64 = 1 << 20

// streamMasker is the masker of one stream of a run.
type streamMasker struct {
	w *mask.Writer
	// cleanStats are w's counters at the stream's last clean point (where
	// w held nothing back); unclean, the stream's raw chunks since then, in
	// memory only, for the probe.
	cleanStats mask.Stats
	unclean    [][]byte
	// dirty: w holds something back (the stream is not at a clean point).
	dirty bool
	// lastIn is run.in after the stream's last chunk.
	lastIn int64
}

// outRun is a run of run.out written by one stream's masker while chunks
// of one time were written: run.out[previous run's end:end].
type outRun struct {
	end    int
	stream Stream
	time   time.Time
}

// cleanPoint is a point of the run after a chunk where no stream's masker
// held anything back: what a commit through that chunk records.
type cleanPoint struct {
	seq uint64
	// masked and tailEnd are the log file's size and the tail segment's
	// end (as spool.State.MaskedBytes and TailBytes) at that point.
	masked, tailEnd int64
	// outLen is the length of run.out at that point: the part of it the
	// commit covers.
	outLen int
	// masks is the maskers' total mask count at that point.
	masks int64
}

func (m *Manager) newRun(id string, sp *spool.Run) *run {
	st := sp.State()
	if st.HeadLimit == 0 && !st.Closed {
		// A new run (or one spooled before limits existed, whose head is
		// kept whole).
		st.HeadLimit = max(m.opts.MaxLogBytes/2, st.MaskedBytes)
		st.TailLimit = m.opts.MaxLogBytes - m.opts.MaxLogBytes/2
	}
	r := &run{id: id, m: m, sp: sp, state: st, kick: make(chan struct{}, 1),
		finalDone: make(chan struct{}), changed: make(chan struct{})}
	if m.lines != nil && !st.Closed {
		r.lines = newLineEmitter(m.lines, id, st.StackID, streamEnd(st))
	}
	return r
}

// sink is a stream's masker's destination: the spool's log file up to the
// head limit, then its tail segment. It runs under r.mu (inside the
// masker's Write, Flush and Close).
type sink struct {
	r      *run
	stream Stream
}

func (k sink) Write(p []byte) (int, error) {
	r, all := k.r, p
	if room := r.state.HeadLimit - r.sp.Size(); room > 0 {
		head := p[:min(int64(len(p)), room)]
		if n, err := r.sp.Write(head); err != nil {
			return n, err
		}
		p = p[len(head):]
	}
	if len(p) > 0 {
		if n, err := r.sp.WriteTail(p); err != nil {
			return len(all) - len(p) + n, err
		}
	}
	if r.lines != nil {
		r.out = append(r.out, all...)
		if n := len(r.outRuns); n > 0 && r.outRuns[n-1].stream == k.stream && r.outRuns[n-1].time.Equal(r.curTime) {
			r.outRuns[n-1].end = len(r.out)
		} else {
			r.outRuns = append(r.outRuns, outRun{end: len(r.out), stream: k.stream, time: r.curTime})
		}
	}
	return len(all), nil
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
	set, rep := mask.NewSet(values, mask.Options{MinLength: m.opts.MinSecretLength, DisableKnownFormats: m.opts.DisableKnownFormats})

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
		m.runs[req.RunID] = r
		m.met.runsOpen.Inc()
		m.startUploader(r)
	}
	m.mu.Unlock()

	r.commitMu.Lock()
	defer r.commitMu.Unlock()
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
	if r.state.PoolID == "" && r.state.StackID == "" {
		r.state.PoolID, r.state.StackID = req.PoolID, req.StackID
		if r.lines != nil {
			r.lines.stackID = req.StackID
		}
	}
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
		if err := r.sp.TruncateTail(r.state.TailBytes); err != nil {
			return nil, 0, err
		}
		// Fresh maskers: the committed point is a clean point of every
		// stream.
		r.set, r.probe = set, set.NewWriter(io.Discard)
		for i := range r.streams {
			r.streams[i] = streamMasker{w: set.NewWriter(sink{r, streamOrder[i]})}
		}
		r.dirty, r.in = 0, 0
		r.out, r.outRuns, r.lastReceived, r.masksDone = nil, nil, r.state.AckedSequence, 0
		r.clean = cleanPoint{seq: r.state.AckedSequence, masked: r.state.MaskedBytes, tailEnd: r.state.TailBytes}
	}
	return &Session{r: r, gen: r.gen}, r.state.AckedSequence + 1, nil
}

// Chunk stores one chunk and commits at once if it ends at a clean point:
// Write then Commit. It returns the sequence to acknowledge through, and
// whether to send that acknowledgement now.
func (s *Session) Chunk(c Chunk) (uint64, bool, error) {
	ack, resend, err := s.Write(c)
	if err != nil || resend {
		return ack, resend, err
	}
	return s.Commit()
}

// Write masks one chunk into the spool, without making it durable: that is
// Commit's work. For a chunk already received (a resend, stored once) it
// returns resend true and the sequence to acknowledge through at once.
// Write keeps c.Data until the chunk is committed: the caller must not
// modify it.
func (s *Session) Write(c Chunk) (ack uint64, resend bool, err error) {
	seq, data := c.Sequence, c.Data
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
	if c.Time.IsZero() {
		c.Time = time.Now()
	}
	r.curTime = c.Time
	i := streamIndex(c.Stream)
	sm := &r.streams[i]
	if _, err := sm.w.Write(data); err != nil {
		r.gen++ // the masker is unusable: the executor must reopen
		return 0, false, fmt.Errorf("store chunk %d: %w", seq, err)
	}
	r.in += int64(len(data))
	sm.lastIn = r.in
	sm.unclean = append(sm.unclean, data)
	r.lastReceived = seq
	r.m.met.bytesIn.Add(float64(len(data)))
	r.settleStreamLocked(sm, r.streamCleanLocked(sm))
	if r.dirty > 0 {
		if err := r.flushIdleLocked(i); err != nil {
			r.gen++ // the masker is unusable: the executor must reopen
			return 0, false, fmt.Errorf("store chunk %d: %w", seq, err)
		}
	}
	if r.dirty == 0 {
		r.markCleanLocked()
	}
	return 0, false, nil
}

// settleStreamLocked records whether stream sm is at a clean point after
// its last chunk; if it is, that is its new last clean point.
func (r *run) settleStreamLocked(sm *streamMasker, clean bool) {
	if !clean {
		if !sm.dirty {
			sm.dirty = true
			r.dirty++
		}
		return
	}
	sm.cleanStats = sm.w.Stats()
	clear(sm.unclean)
	sm.unclean = sm.unclean[:0]
	if sm.dirty {
		sm.dirty = false
		r.dirty--
	}
}

// flushIdleLocked flushes the maskers, but that of stream cur, which hold
// bytes back while idleFlushBytes were written since their stream's last
// chunk, so that acknowledgements never wait on a silent stream for ever.
func (r *run) flushIdleLocked(cur int) error {
	for j := range r.streams {
		sm := &r.streams[j]
		if j == cur || !sm.dirty || r.in-sm.lastIn < idleFlushBytes {
			continue
		}
		if err := sm.w.Flush(); err != nil {
			return err
		}
		r.m.log.Info("flushed the bytes a stream's masker held back, the stream being silent while other streams went on",
			"run_id", r.id, "stream", string(streamOrder[j]), "bytes_since", r.in-sm.lastIn)
		r.settleStreamLocked(sm, true)
	}
	return nil
}

// markCleanLocked records the point after the last chunk written, where
// no stream's masker holds anything back, as the last clean point.
func (r *run) markCleanLocked() {
	var masks int64
	for i := range r.streams {
		masks += r.streams[i].w.Stats().Masks
	}
	r.clean = cleanPoint{seq: r.lastReceived, masked: r.sp.Size(), tailEnd: r.sp.TailEnd(),
		outLen: len(r.out), masks: masks}
}

// Commit makes durable every chunk up to the last clean point not committed
// yet, and returns the sequence to acknowledge through and whether to send
// that acknowledgement (false when there was nothing new to commit). Write
// may run meanwhile: Commit holds the run's lock only to record the clean
// point before the fsyncs, and to publish the commit after them.
func (s *Session) Commit() (uint64, bool, error) {
	if s.fin != nil {
		return s.fin.lastSeq, false, nil
	}
	r := s.r
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != s.gen || r.finished && !r.state.Closed {
		return 0, false, ErrSuperseded
	}
	cp := r.clean
	if r.state.Closed || cp.seq <= r.state.AckedSequence {
		return r.state.AckedSequence, false, nil
	}
	st := r.commitStateLocked(cp)
	// Only Write runs meanwhile: it appends to the spool past cp and
	// records later clean points; every other writer of the state waits
	// for commitMu.
	r.mu.Unlock()
	err := r.sp.Commit(st)
	r.mu.Lock()
	if err != nil {
		r.gen++ // what the spool holds is unknown: the executor must reopen
		return 0, false, fmt.Errorf("commit chunk %d: %w", cp.seq, err)
	}
	batches := r.committedLocked(cp, st)
	r.compactLocked()
	if len(batches) > 0 {
		r.mu.Unlock()
		r.feedLines(batches)
		r.mu.Lock()
		r.recycleLocked(batches)
	}
	return cp.seq, true, nil
}

// commitStateLocked returns the state that commits through clean point cp.
func (r *run) commitStateLocked(cp cleanPoint) spool.State {
	st := r.state
	st.AckedSequence, st.MaskedBytes, st.TailBytes = cp.seq, cp.masked, cp.tailEnd
	r.linesStateLocked(&st, cp.outLen)
	return st
}

// committedLocked publishes st, just made durable, which commits through
// clean point cp. It returns the committed masked bytes to write to
// standard output (see feedLines), which it takes from r.out: one batch
// per run of r.out, with its stream and time.
func (r *run) committedLocked(cp cleanPoint, st spool.State) []lineBatch {
	r.publishLocked(st)
	r.m.met.masks.Add(float64(cp.masks - r.masksDone))
	r.masksDone = cp.masks
	var batches []lineBatch
	if r.lines != nil {
		start := 0
		for _, o := range r.outRuns {
			if start >= cp.outLen {
				break
			}
			if end := min(o.end, cp.outLen); end > start {
				batches = append(batches, lineBatch{r.out[start:end], o.time, string(o.stream)})
			}
			start = o.end
		}
	}
	// Keep what was written after cp, for the next commit (the run of
	// r.out across cp, if any, keeps its part after cp), in the spare
	// buffer: the batches keep the committed bytes.
	k := 0
	for _, o := range r.outRuns {
		if o.end > cp.outLen {
			o.end -= cp.outLen
			r.outRuns[k] = o
			k++
		}
	}
	clear(r.outRuns[k:])
	r.outRuns = r.outRuns[:k]
	if len(batches) > 0 {
		r.out, r.outSpare = append(r.outSpare[:0], r.out[cp.outLen:]...), nil
	} else {
		r.out = r.out[:copy(r.out, r.out[cp.outLen:])]
	}
	r.clean.outLen -= cp.outLen
	return batches
}

// lineBatch is committed masked output for standard output, with the time
// and stream of its chunks.
type lineBatch struct {
	data   []byte
	t      time.Time
	stream string
}

// feedLines writes the lines of batches to standard output. The caller
// holds commitMu, which guards the line emitter; not the run's lock, so
// that chunks keep being masked meanwhile.
func (r *run) feedLines(batches []lineBatch) {
	for _, b := range batches {
		r.lines.feed(b.data, b.t, b.stream)
	}
}

// recycleLocked gives back the buffer of batches, fed, for r.out.
func (r *run) recycleLocked(batches []lineBatch) {
	if len(batches) > 0 {
		r.outSpare = batches[0].data[:0]
	}
}

// commitAllLocked commits every masked byte written, the masker being at a
// clean point (after its Close), with acked sequence lastReceived. It
// holds the run's lock throughout; the caller holds commitMu. The tail
// segment is not compacted: the log is being closed.
func (r *run) commitAllLocked() error {
	r.markCleanLocked()
	cp := r.clean
	st := r.commitStateLocked(cp)
	if err := r.sp.Commit(st); err != nil {
		return err
	}
	r.feedLines(r.committedLocked(cp, st))
	return nil
}

// outMetaLocked returns the time and stream of the first n bytes of r.out
// (the bytes of a commit): the first run's time, and the runs' stream if
// they share one; false if there are none.
func (r *run) outMetaLocked(n int) (time.Time, string, bool) {
	if n <= 0 || len(r.outRuns) == 0 {
		return time.Time{}, "", false
	}
	first := r.outRuns[0]
	stream, end := first.stream, first.end
	for _, o := range r.outRuns[1:] {
		if end >= n {
			break
		}
		if o.stream != stream {
			stream = ""
		}
		end = o.end
	}
	return first.time, string(stream), true
}

// linesStateLocked records in st where standard output stands: the
// position up to which lines were written (everything, when off), with
// the time and stream of the bytes from there: the partial line's, else
// those of the first n bytes of r.out, being committed.
func (r *run) linesStateLocked(st *spool.State, n int) {
	if r.lines == nil {
		st.StdoutEmitted, st.StdoutTime, st.StdoutStream = streamEnd(*st), 0, ""
		return
	}
	st.StdoutEmitted, st.StdoutTime, st.StdoutStream = r.lines.emitted(), 0, ""
	if len(r.lines.partial) == 0 {
		if t, stream, ok := r.outMetaLocked(n); ok {
			st.StdoutTime, st.StdoutStream = t.UnixNano(), stream
		}
	}
	if len(r.lines.partial) > 0 {
		st.StdoutTime, st.StdoutStream = r.lines.ptime.UnixNano(), r.lines.pstream
		if r.lines.pmixed {
			st.StdoutStream = ""
		}
	}
}

// saveLinesLocked records where standard output stands, at a clean
// shutdown, so that the next logship writes no line twice.
func (r *run) saveLinesLocked() {
	if r.lines == nil || r.state.Closed || r.fileClosed || r.finished {
		return
	}
	st := r.state
	r.linesStateLocked(&st, 0)
	if st == r.state {
		return
	}
	if err := r.sp.SaveState(st); err != nil {
		r.m.log.Warn("recording the standard output position failed; some lines may be written again after the restart",
			"run_id", r.id, "err", err)
		return
	}
	r.state = st
}

// resumeLinesLocked, for a run loaded from the spool, writes again the
// lines from the recorded standard output position (see the package
// documentation), holding the partial line at the end.
func (r *run) resumeLinesLocked() error {
	if r.lines == nil {
		return nil
	}
	st := r.state
	from, end := st.StdoutEmitted, streamEnd(st)
	if st.TailBytes > 0 {
		from = max(from, st.MaskedBytes+st.TailBase) // older tail bytes are gone
	}
	from = min(from, end)
	r.lines.pos = from
	if st.StdoutTime != 0 {
		r.lines.ptime, r.lines.pstream = time.Unix(0, st.StdoutTime), st.StdoutStream
	}
	t, stream := r.lines.ptime, r.lines.pstream
	if t.IsZero() {
		t = time.Now()
	}
	buf := make([]byte, 64<<10)
	for from < end {
		n := min(int64(len(buf)), end-from)
		var err error
		if from < st.MaskedBytes {
			n = min(n, st.MaskedBytes-from)
			_, err = r.sp.ReadAt(buf[:n], from)
		} else {
			_, err = r.sp.ReadTailAt(buf[:n], from-st.MaskedBytes)
		}
		if err != nil {
			return fmt.Errorf("read spool for standard output: %w", err)
		}
		r.lines.feed(buf[:n], t, stream)
		from += n
	}
	return nil
}

// compactLocked compacts the tail segment once it holds twice the tail
// limit, keeping the last tail limit bytes (and the partial line not yet
// written to standard output). It runs right after a commit, under
// commitMu and the run's lock, which it releases while the kept bytes are
// copied and synced, so that chunks keep being masked into the segment
// meanwhile. A failure is logged: the commit stands, and the segment is
// compacted at a later commit.
func (r *run) compactLocked() {
	st := r.state
	if st.TailLimit <= 0 || st.TailBytes-st.TailBase < 2*st.TailLimit {
		return
	}
	from := st.TailBytes - st.TailLimit
	r.linesStateLocked(&st, 0)
	if r.lines != nil {
		from = min(from, st.StdoutEmitted-st.MaskedBytes)
	}
	if from <= st.TailBase {
		return
	}
	// Only Write runs meanwhile; it appends to the segment.
	r.mu.Unlock()
	c, err := r.sp.StartCompaction(st, from)
	r.mu.Lock()
	var next spool.State
	if err == nil {
		next, err = c.Finish()
	}
	if err != nil {
		r.m.log.Warn("compacting the tail segment failed", "run_id", r.id, "err", err)
		return
	}
	r.m.met.spoolBytes.Add(float64(spooled(next) - spooled(r.state)))
	r.state = next
}

// streamCleanLocked reports whether stream sm's masker holds nothing
// back: a fresh writer fed the stream's raw bytes since its last clean
// point releases nothing when flushed.
func (r *run) streamCleanLocked(sm *streamMasker) bool {
	// Fast path, from the writer's counters: if it wrote no mask since the
	// stream's last clean point, its output since then is raw input,
	// unchanged and in order, so it holds something back exactly when it
	// wrote fewer bytes than it was given.
	now := sm.w.Stats()
	if now.Masks == sm.cleanStats.Masks {
		return now.BytesOut-sm.cleanStats.BytesOut == now.BytesIn-sm.cleanStats.BytesIn
	}
	for _, p := range sm.unclean {
		if _, err := r.probe.Write(p); err != nil {
			r.probe = r.set.NewWriter(io.Discard)
			return false
		}
	}
	before := r.probe.Stats()
	if err := r.probe.Flush(); err != nil {
		r.probe = r.set.NewWriter(io.Discard)
		return false
	}
	after := r.probe.Stats()
	return after.BytesOut == before.BytesOut && after.Masks == before.Masks
}

// commitLocked makes st durable and visible, holding the run's lock.
func (r *run) commitLocked(st spool.State) error {
	if err := r.sp.Commit(st); err != nil {
		return err
	}
	r.publishLocked(st)
	return nil
}

// publishLocked makes st, just committed, the run's state, seen by the
// readers and the uploader.
func (r *run) publishLocked(st spool.State) {
	if !st.Closed {
		r.m.met.bytesOut.Add(float64(streamEnd(st) - streamEnd(r.state)))
		r.m.met.truncated.Add(float64(st.Cut() - r.state.Cut()))
	}
	r.m.met.spoolBytes.Add(float64(spooled(st) - spooled(r.state)))
	r.state = st
	close(r.changed)
	r.changed = make(chan struct{})
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
	closed, err := r.close(s.gen, lastSeq)
	if err != nil {
		return Closed{}, err
	}
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

// close ends the log for the session of generation gen (see Session.Close).
func (r *run) close(gen, lastSeq uint64) (Closed, error) {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen || r.finished && !r.state.Closed {
		return Closed{}, ErrSuperseded
	}
	if r.state.Closed {
		if lastSeq != r.state.AckedSequence {
			return Closed{}, fmt.Errorf("%w: close at %d, log was closed at %d", ErrGap, lastSeq, r.state.AckedSequence)
		}
	} else {
		if lastSeq != r.lastReceived {
			return Closed{}, fmt.Errorf("%w: close at %d, last chunk received is %d", ErrGap, lastSeq, r.lastReceived)
		}
		if err := r.closeLocked(); err != nil {
			r.gen++
			return Closed{}, err
		}
	}
	return r.closedLocked(), nil
}

// closeLocked ends the log in two commits. The first commits the
// masker's last bytes like any clean point (acked through the last chunk)
// and writes the last lines to standard output. The second turns the log
// file into the stored log (head, notice, kept tail), hashes it and
// records it closed. A crash between them leaves a run whose Close, sent
// again, does the second step only.
func (r *run) closeLocked() error {
	for i := range r.streams { // stdout, stderr, system, others
		if err := r.streams[i].w.Close(); err != nil {
			return fmt.Errorf("close masker: %w", err)
		}
	}
	r.dirty = 0
	if err := r.commitAllLocked(); err != nil {
		return fmt.Errorf("commit close: %w", err)
	}
	if r.lines != nil {
		r.lines.flush()
	}
	st := r.state
	if err := r.sp.Truncate(st.MaskedBytes); err != nil {
		return fmt.Errorf("close log: %w", err)
	}
	if cut := st.Cut(); cut > 0 {
		notice := fmt.Sprintf("\n[hangar] log truncated: %d bytes cut from the middle (limit %d bytes)\n", cut, st.HeadLimit+st.TailLimit)
		if _, err := r.sp.Write([]byte(notice)); err != nil {
			return fmt.Errorf("close log: %w", err)
		}
	}
	kept := st.TailBytes - st.Cut()
	if kept > 0 {
		tail := io.NewSectionReader(tailReader{r.sp}, st.TailBytes-kept, kept)
		if _, err := io.Copy(r.sp, tail); err != nil {
			return fmt.Errorf("close log: copy the tail: %w", err)
		}
	}
	size := r.sp.Size()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r.sp, 0, size)); err != nil {
		return fmt.Errorf("hash log: %w", err)
	}
	st.MaskedBytes, st.Closed, st.SHA256 = size, true, hex.EncodeToString(h.Sum(nil))
	if err := r.commitLocked(st); err != nil {
		return fmt.Errorf("commit close: %w", err)
	}
	if err := r.sp.RemoveTail(); err != nil {
		r.m.log.Warn("removing the tail segment of a closed log", "run_id", r.id, "err", err)
	}
	r.m.met.runsOpen.Dec()
	r.set, r.probe, r.lines, r.out, r.outRuns = nil, nil, nil, nil, nil
	r.streams = [numStreams]streamMasker{}
	return nil
}

// tailReader reads the tail segment by position past the head.
type tailReader struct{ sp *spool.Run }

func (t tailReader) ReadAt(p []byte, off int64) (int, error) { return t.sp.ReadTailAt(p, off) }

func (r *run) closedLocked() Closed {
	return Closed{Key: r.m.opts.Store.FinalKey(r.id), Bytes: r.state.MaskedBytes, SHA256: r.state.SHA256,
		Truncated: r.state.Cut()}
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
