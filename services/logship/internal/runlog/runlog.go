package runlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	// ErrInvalidRunID: the run id is not valid (ids.ValidRunID).
	ErrInvalidRunID = spool.ErrInvalidRunID
	// ErrSecretsTooLarge: an Open whose secrets exceed MaxSecretBytes.
	ErrSecretsTooLarge = errors.New("secrets too large")
	// ErrSpoolFull: a new run refused while the spool's disk is nearly
	// full (Options.MinFreeBytes).
	ErrSpoolFull = errors.New("spool disk nearly full: logship takes no new run")
)

// Store is the part of the S3 log store used here.
type Store interface {
	// PutChunk uploads live chunk n and returns its ETag.
	PutChunk(ctx context.Context, runID string, n uint64, body io.ReadSeeker, size int64) (string, error)
	// PutFinal stores the final object only if there is none yet
	// (If-None-Match: *); s3log.ErrFinalExists if there is.
	PutFinal(ctx context.Context, runID string, body io.ReadSeeker, f s3log.Final) error
	// StatFinal describes a stored final object; s3log.ErrNotFound if
	// there is none.
	StatFinal(ctx context.Context, runID string) (s3log.Final, error)
	// DeleteChunks removes live chunk objects 1..n.
	DeleteChunks(ctx context.Context, runID string, n uint64) error
	FinalKey(runID string) string
}

// partsStore is a Store that can also assemble a final object from the
// live chunks, server-side (s3log.Store.PutFinalParts; ADR 0022).
type partsStore interface {
	PutFinalParts(ctx context.Context, runID string, parts []s3log.Part, log io.ReaderAt, f s3log.Final) error
	// AbortUploads aborts the multipart uploads of the run's final object
	// in progress (left by a logship that stopped).
	AbortUploads(ctx context.Context, runID string) (int, error)
}

// DiskProbe tells how many bytes are free for unprivileged use on the
// file system of a directory (statfs; tests inject their own).
type DiskProbe interface {
	FreeBytes(dir string) (uint64, error)
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
	// MaxChunkObject is the size of the live chunk objects uploaded as
	// soon as that many committed bytes wait, between chunk intervals,
	// and the cap of one live chunk object (default 16 MiB; at least
	// s3log.MinPartSize so that each can be a part of the final object).
	MaxChunkObject int64
	// FinishedRuns is how many finished runs are remembered, to answer a
	// late reopen (default 1024).
	FinishedRuns int
	// MaxLogBytes limits the stored log of each run (head and tail kept);
	// default DefaultMaxLogBytes, at least MinMaxLogBytes.
	MaxLogBytes int64
	// Stdout, if set, receives each masked line of every run as JSON.
	Stdout io.Writer
	// IdleClose closes the log of a run that received no chunk and no Open
	// for this long (its executor did not come back), marked incomplete
	// (default DefaultIdleClose).
	IdleClose time.Duration
	// MinFreeBytes: below this many free bytes on the spool's file system,
	// no new run is taken (0: no guard). Disk measures them (default:
	// statfs); DiskCheckInterval is how often the guard looks (default 5s).
	MinFreeBytes      int64
	Disk              DiskProbe
	DiskCheckInterval time.Duration
	// Now is the clock (default time.Now).
	Now      func() time.Time
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// DefaultIdleClose is the default of Options.IdleClose.
const DefaultIdleClose = 30 * time.Minute

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
	idleClosed, finalConflicts          prometheus.Counter
	spoolFree, spoolFull                prometheus.Gauge
}

// Manager holds the runs of this logship.
type Manager struct {
	opts Options
	log  *slog.Logger
	met  metrics
	// multipartFallback is set once a final object could not be assembled
	// from its live chunks (logged the first time only; every time is
	// counted by s3log).
	multipartFallback atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lines *lineSink // nil: no standard output
	guard diskGuard

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
	opts.MaxChunkObject = max(opts.MaxChunkObject, s3log.MinPartSize)
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
	if opts.IdleClose <= 0 {
		opts.IdleClose = DefaultIdleClose
	}
	if opts.Disk == nil {
		opts.Disk = statfsProbe{}
	}
	if opts.DiskCheckInterval <= 0 {
		opts.DiskCheckInterval = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
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
		idleClosed: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_runs_idle_closed_total",
			Help: "Run logs closed by logship, marked incomplete, because their executor sent nothing for HANGAR_LOG_IDLE_CLOSE."}),
		finalConflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "hangar_logship_final_conflicts_total",
			Help: "Final logs not stored because another final log of the same run id was already in S3 (never replaced); their live chunks are kept."}),
		spoolFree: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_logship_spool_free_bytes",
			Help: "Free bytes on the spool's file system, as last measured."}),
		spoolFull: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_logship_spool_full",
			Help: "1 while the spool's file system has less than HANGAR_SPOOL_MIN_FREE_MB free: logship takes no new run."}),
	}
	if opts.Registry != nil {
		for _, c := range []prometheus.Collector{m.met.bytesIn, m.met.bytesOut, m.met.masks, m.met.truncated, m.met.spoolBytes, m.met.runsOpen,
			m.met.idleClosed, m.met.finalConflicts, m.met.spoolFree, m.met.spoolFull} {
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
	m.guard.check(m)
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.guardLoop(m.ctx)
	}()
	go func() {
		defer m.wg.Done()
		m.idleLoop(m.ctx)
	}()
	return m, nil
}

// now reads the Manager's clock.
func (m *Manager) now() time.Time { return m.opts.Now() }

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
