package runlog

import (
	"fmt"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// outRun is a run of run.out written for one stream while chunks of one
// time were written: run.out[previous run's end:end].
type outRun struct {
	end    int
	stream Stream
	time   time.Time
}

// cleanPoint is a point of the run after a chunk where no masker (the
// streams' and the last pass) held anything back: what a commit through
// that chunk records.
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
	// line is the merger's owner at that point (see merger.owner).
	line int
}

// markCleanLocked records the point after the last chunk written, where
// no masker holds anything back, as the last clean point.
func (r *run) markCleanLocked() {
	r.cleanedLocked()
	// The masks that reach the log: the last pass's, and the streams'
	// (the last pass passes a mask string through unchanged).
	masks := r.masksBase + r.merge.last.w.Stats().Masks
	for i := range r.streams {
		masks += r.streams[i].w.Stats().Masks
	}
	r.clean = cleanPoint{seq: r.lastReceived, masked: r.sp.Size(), tailEnd: r.sp.TailEnd(),
		outLen: len(r.out), masks: masks, line: r.merge.owner}
}

// Commit makes durable every chunk up to the last clean point not committed
// yet, and returns the sequence to acknowledge through and whether to send
// that acknowledgement (false when there was nothing new to commit). Write
// may run meanwhile: Commit holds the run's lock only to record the clean
// point before the fsyncs, and to publish the commit after them.
func (s *Session) Commit() (uint64, bool, error) {
	return s.commit(nil)
}

// CommitAck is Commit, and calls ack with the sequence to acknowledge
// through when the commit covered new chunks: as soon as the commit is
// durable, before the work that follows it (compacting the tail segment,
// writing the committed lines to standard output), so that the
// acknowledgement waits for the fsyncs only. It returns the error of the
// commit or of ack.
func (s *Session) CommitAck(ack func(through uint64) error) error {
	_, _, err := s.commit(ack)
	return err
}

func (s *Session) commit(ack func(through uint64) error) (uint64, bool, error) {
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
	var ackErr error
	if ack != nil {
		// Only Write runs meanwhile, as during the fsyncs.
		r.mu.Unlock()
		ackErr = ack(cp.seq)
		r.mu.Lock()
	}
	r.compactLocked()
	if len(batches) > 0 {
		r.mu.Unlock()
		r.feedLines(batches)
		r.mu.Lock()
		r.recycleLocked(batches)
	}
	return cp.seq, true, ackErr
}

// commitStateLocked returns the state that commits through clean point cp.
func (r *run) commitStateLocked(cp cleanPoint) spool.State {
	st := r.state
	st.AckedSequence, st.MaskedBytes, st.TailBytes = cp.seq, cp.masked, cp.tailEnd
	st.OpenLine = cp.line + 1
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

// commitAllLocked commits every masked byte written, the maskers being at
// a clean point (after their Close), with acked sequence lastReceived. It
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
	if !st.Closed && st.MaskedBytes-st.UploadedBytes >= r.m.opts.MaxChunkObject {
		r.wake() // a live chunk's worth: upload it now, not at the interval
	}
	close(r.changed)
	r.changed = make(chan struct{})
}
