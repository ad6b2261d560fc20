package runlog

import (
	"context"
	"fmt"
	"time"
)

// Close ends the log: flushes the maskers, commits, and waits for the
// final upload up to the CloseWait bound. It answers with the final object's key
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
		if err := r.closeLocked(""); err != nil {
			r.gen++
			return Closed{}, err
		}
	}
	return r.closedLocked(), nil
}

// closeLocked ends the log in two commits. The first writes what the
// maskers hold back (the streams' in the order of their last chunks, then
// the last pass's), then footer if any (the log is then marked
// incomplete: logship closed it, not the executor), and commits like any clean point
// (acked through the last chunk) and writes the last lines to standard
// output. The second records the stored log (head in the log file,
// notice, kept tail read in place from the tail segment), its digest,
// and that it is closed. A crash between
// them leaves a run whose Close, sent again, does the second step only.
func (r *run) closeLocked(footer string) error {
	if err := r.flushStreamsLocked(-1); err != nil {
		return fmt.Errorf("close masker: %w", err)
	}
	if footer != "" {
		if err := r.noticeLocked(footer); err != nil {
			return fmt.Errorf("close log: %w", err)
		}
	}
	for i := range r.streams {
		if err := r.streams[i].w.Close(); err != nil {
			return fmt.Errorf("close masker: %w", err)
		}
	}
	if err := r.merge.close(r); err != nil {
		return fmt.Errorf("close masker: %w", err)
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
	var notice string
	if cut := st.Cut(); cut > 0 {
		notice = fmt.Sprintf("\n[hangar] log truncated: %d bytes cut from the middle (limit %d bytes)\n", cut, st.HeadLimit+st.TailLimit)
	}
	// The stored log is the head in the log file, the notice, and the
	// kept tail read in place from the tail segment (already durable):
	// nothing is copied or written again. A log that was not cut has its
	// digest already (the tail was hashed as written after the head).
	kept := st.TailBytes - st.Cut()
	sum, err := r.sp.StoredSHA256([]byte(notice), st.TailBytes-kept, kept)
	if err != nil {
		return fmt.Errorf("hash log: %w", err)
	}
	if kept > 0 || notice != "" {
		st.StoredHead, st.Notice = st.MaskedBytes, notice
	}
	st.MaskedBytes += int64(len(notice)) + kept
	st.Closed, st.SHA256 = true, sum
	st.Incomplete = footer != ""
	if err := r.commitLocked(st); err != nil {
		return fmt.Errorf("commit close: %w", err)
	}
	if st.StoredHead == 0 {
		if err := r.sp.RemoveTail(); err != nil {
			r.m.log.Warn("removing the tail segment of a closed log", "run_id", r.id, "err", err)
		}
	}
	r.m.met.runsOpen.Dec()
	r.set, r.lines, r.out, r.outRuns = nil, nil, nil, nil
	r.streams, r.merge = [numStreams]streamMasker{}, merger{}
	return nil
}

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
