package runlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hangar-dev/hangar/platform/ids"
	"github.com/hangar-dev/hangar/services/logship/internal/mask"
	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// run is one run's log.
type run struct {
	id string
	m  *Manager
	sp *spool.Run

	kick      chan struct{}
	finalDone chan struct{}
	// chunks are the live chunk objects uploaded by this process, by
	// number, for the final object's parts (upload.go); only the
	// uploader goroutine uses it.
	chunks map[uint64]liveChunk
	// leftovers: the log was closed when this process took the run, so a
	// logship before may have left a multipart upload of its final object
	// (upload.go aborts them first); uploader goroutine only.
	leftovers bool

	// commitMu serializes the writers of the run's state (commits, Open's
	// rollback, Close, upload progress, the clean shutdown) so that
	// the state only ever moves forward; a commit holds it, but not mu,
	// while it fsyncs, so that chunks keep being masked into the spool
	// meanwhile. Lock order: commitMu, then mu.
	commitMu sync.Mutex

	mu    sync.Mutex
	state spool.State // last committed
	gen   uint64      // incremented by each Open
	set   *mask.Set
	// streams are the run's maskers, one per stream (see streamIndex), all
	// on set, each writing into the merge (see merge.go).
	streams [numStreams]streamMasker
	// merge interleaves the streams' masked output at line boundaries and
	// runs the last pass over it, into the spool.
	merge merger
	// dirty is the number of maskers (streams' and the last pass) that
	// hold something back: the point after the last chunk is clean when it
	// is zero.
	dirty int
	// in counts the raw bytes written since the Open, all streams.
	in int64
	// clean is the last clean point.
	clean        cleanPoint
	lastReceived uint64
	// curTime is the time of the chunk being written: that of the masked
	// bytes the sink receives.
	curTime time.Time
	// curStream is the stream of the merged bytes being written, for
	// standard output.
	curStream Stream
	// lines writes the committed masked lines to standard output (nil when
	// off); out holds the masked bytes written since the last commit, for
	// it, and outRuns says which stream's masker wrote them, and when.
	lines     *lineEmitter
	out       []byte
	outRuns   []outRun
	outSpare  []byte // a buffer for out, given back by the commit that took out
	masksDone int64  // maskers' mask count at the last commit
	masksBase int64  // masks of last passes replaced since the Open (direct.go)
	// seg is the kind of the chunks written since the last clean point,
	// segStream their stream in a direct segment, kept those chunks then,
	// keptBytes their size (see direct.go).
	seg        segKind
	segStream  int
	kept       []keptChunk
	keptBytes  int64
	changed    chan struct{} // closed and replaced when state grows
	finished   bool          // final object uploaded (or manager closed)
	readers    int
	fileClosed bool
	// lastChunk is when the last chunk (or Open) of this run arrived; the
	// idle closer ends a run silent for longer than Options.IdleClose.
	lastChunk time.Time
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
		finalDone: make(chan struct{}), changed: make(chan struct{}), lastChunk: m.now()}
	if m.lines != nil && !st.Closed {
		r.lines = newLineEmitter(m.lines, id, st.StackID, streamEnd(st))
	}
	return r
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
	if !ids.ValidRunID(req.RunID) {
		return nil, 0, ErrInvalidRunID
	}
	if err := checkSecretBytes(req.Secrets); err != nil {
		return nil, 0, err
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
	if m.runs[req.RunID] == nil {
		// A run this logship does not hold: if its log is stored already
		// (a run finished and forgotten), it is answered as finished, and
		// never written again.
		m.mu.Unlock()
		if f, ok := m.storedFinal(req.RunID); ok {
			return &Session{fin: &f}, f.lastSeq + 1, nil
		}
		m.mu.Lock()
	}
	r := m.runs[req.RunID]
	if r == nil {
		if m.ctx.Err() != nil {
			m.mu.Unlock()
			return nil, 0, errors.New("logship is stopping")
		}
		if err := m.admitNewRun(req.RunID); err != nil {
			m.mu.Unlock()
			return nil, 0, err
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
	r.lastChunk = m.now()
	if r.state.PoolID == "" && r.state.StackID == "" {
		r.state.PoolID, r.state.StackID = req.PoolID, req.StackID
		if r.lines != nil {
			r.lines.stackID = req.StackID
		}
	}
	if !r.state.Closed {
		if err := r.resetLocked(set); err != nil {
			return nil, 0, err
		}
		if r.state.AckedSequence == 0 && streamEnd(r.state) == 0 {
			// The run's first bytes: what is not masked, named.
			r.curTime = r.lastChunk
			if err := r.noticeNotMaskedLocked(req.Secrets, rep); err != nil {
				r.gen++
				return nil, 0, err
			}
		}
	}
	return &Session{r: r, gen: r.gen}, r.state.AckedSequence + 1, nil
}

// storedFinal asks S3 whether runID has a final object, and returns it as
// a finished run if it has. If S3 cannot be asked, the run is taken: the
// final object's precondition keeps a stored log from being replaced (see
// uploadOnce).
func (m *Manager) storedFinal(runID string) (finishedRun, bool) {
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	f, err := m.opts.Store.StatFinal(ctx, runID)
	if err != nil {
		if !errors.Is(err, s3log.ErrNotFound) {
			m.log.Warn("could not ask S3 whether a new run's log is stored already; taking the run", "run_id", runID, "err", err)
		}
		return finishedRun{}, false
	}
	m.log.Info("Open of a run whose log is stored already: answered as finished, the log is never replaced",
		"run_id", runID, "last_sequence", f.LastSequence)
	return finishedRun{closed: Closed{Key: m.opts.Store.FinalKey(runID), Bytes: f.Bytes, SHA256: f.SHA256, Truncated: f.Truncated},
		lastSeq: f.LastSequence}, true
}

// resetLocked rolls the run back to its last commit: the spool is
// truncated to the committed sizes and the maskers, on set, start fresh,
// since the committed point is a clean point of every masker.
func (r *run) resetLocked(set *mask.Set) error {
	if err := r.sp.Truncate(r.state.MaskedBytes); err != nil {
		return err
	}
	if err := r.sp.TruncateTail(r.state.TailBytes); err != nil {
		return err
	}
	r.set = set
	for i := range r.streams {
		r.streams[i] = streamMasker{tracked: tracked{w: set.NewWriter(streamSink{r, i})}}
	}
	r.merge = merger{last: tracked{w: set.NewWriter(sink{r})}, owner: r.state.OpenLine - 1}
	r.dirty, r.in = 0, 0
	r.out, r.outRuns, r.lastReceived, r.masksDone, r.masksBase = nil, nil, r.state.AckedSequence, 0, 0
	r.seg, r.kept, r.keptBytes = segNone, nil, 0
	r.clean = cleanPoint{seq: r.state.AckedSequence, masked: r.state.MaskedBytes, tailEnd: r.state.TailBytes,
		line: r.merge.owner}
	return nil
}

// noticeNotMaskedLocked writes, as the first lines of a new run's log,
// the names (never the values) of the secrets too short to be masked, and
// of the secrets some of whose encodings are too short to be masked (with
// those encodings' classes), and logs them once in logship's own log. The
// lines are part of the log from the first commit on; an Open that rolls
// a run back to its start writes them again.
func (r *run) noticeNotMaskedLocked(secrets []Secret, rep mask.Report) error {
	minLen := r.m.opts.MinSecretLength
	if minLen <= 0 {
		minLen = mask.DefaultMinLength
	}
	var text strings.Builder
	if len(rep.TooShort) > 0 {
		names := make([]string, len(rep.TooShort))
		for i, idx := range rep.TooShort {
			names[i] = secretName(secrets[idx].Name, idx)
		}
		r.m.log.Warn("secrets shorter than the minimum length are not masked", "run_id", r.id,
			"names", names, "min_length", minLen)
		fmt.Fprintf(&text, "[hangar] not masked in this log (shorter than %d bytes): %s\n", minLen, strings.Join(names, ", "))
	}
	if len(rep.NotDerived) > 0 {
		parts := make([]string, len(rep.NotDerived))
		for i, nd := range rep.NotDerived {
			parts[i] = secretName(secrets[nd.Secret].Name, nd.Secret) + " (" + strings.Join(nd.Encodings, ", ") + ")"
		}
		r.m.log.Warn("encodings of secrets too short to be masked", "run_id", r.id, "secrets", parts, "min_length", minLen)
		fmt.Fprintf(&text, "[hangar] encodings not masked in this log (shorter than %d bytes): %s\n", minLen, strings.Join(parts, "; "))
	}
	if text.Len() == 0 {
		return nil
	}
	return r.noticeLocked(text.String())
}

// secretName is how a secret is named in a notice: its name, or its
// position when it has none.
func secretName(name string, idx int) string {
	if name == "" {
		return fmt.Sprintf("#%d", idx+1)
	}
	return name
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
	r.lastChunk = r.m.now()
	if c.Time.IsZero() {
		c.Time = r.lastChunk
	}
	r.curTime = c.Time
	if err := r.writeChunkLocked(seq, streamIndex(c.Stream), data); err != nil {
		r.gen++ // a masker is unusable: the executor must reopen
		return 0, false, fmt.Errorf("store chunk %d: %w", seq, err)
	}
	r.lastReceived = seq
	r.m.met.bytesIn.Add(float64(len(data)))
	if r.dirty == 0 {
		r.markCleanLocked()
	}
	return 0, false, nil
}
