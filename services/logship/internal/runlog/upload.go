package runlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

func (m *Manager) startUploader(r *run) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		r.uploadLoop(m.ctx)
	}()
}

// uploadLoop uploads live chunks every chunk interval and, once the log is
// closed, the final object; failures are retried with backoff until ctx
// ends.
func (r *run) uploadLoop(ctx context.Context) {
	opts := r.m.opts
	backoff := opts.RetryMin
	timer := time.NewTimer(opts.ChunkInterval)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.kick:
		}
		final, err := r.uploadOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			level := r.m.log.Warn
			if failures > 1 {
				level = r.m.log.Debug
				if failures%10 == 0 {
					level = r.m.log.Warn
				}
			}
			level("S3 upload failed; retrying", "run_id", r.id, "final", final, "failures", failures,
				"retry_in", backoff, "err", err)
			timer.Reset(backoff)
			backoff = min(backoff*2, opts.RetryMax)
			continue
		}
		if failures > 0 {
			r.m.log.Info("S3 upload succeeded after failures", "run_id", r.id, "failures", failures)
		}
		failures, backoff = 0, opts.RetryMin
		if final {
			r.m.finish(r)
			return
		}
		timer.Reset(opts.ChunkInterval)
	}
}

// uploadOnce uploads what is due: the final object of a closed log, else
// the committed bytes not uploaded yet as live chunk objects. final says
// whether the final object was (to be) uploaded.
//
// The final object is written only if there is none (If-None-Match: *),
// so a stored log is never replaced. If one is there already: if it has
// this log's digest, it is this log's, stored before a restart, and the
// upload goes on; else it is another log of the same run id (an Open of a
// run long finished and forgotten, while S3 could not be asked): this log
// is not lost but stays in live chunk objects (the rest of it is uploaded
// as further chunks), is counted in hangar_logship_final_conflicts_total
// and logged. Once the final object is stored, the live chunk objects are
// removed: a log lives in one place.
func (r *run) uploadOnce(ctx context.Context) (final bool, err error) {
	r.mu.Lock()
	st := r.state
	r.mu.Unlock()
	store := r.m.opts.Store
	if !st.Closed {
		_, err := r.uploadChunks(ctx, st)
		return false, err
	}
	body := io.NewSectionReader(storedLog{r.sp}, 0, st.MaskedBytes)
	err = store.PutFinal(ctx, r.id, body, s3log.Final{Bytes: st.MaskedBytes, SHA256: st.SHA256, LastSequence: st.AckedSequence,
		Truncated: st.Cut(), Incomplete: st.Incomplete})
	if errors.Is(err, s3log.ErrFinalExists) {
		got, serr := store.StatFinal(ctx, r.id)
		if serr != nil {
			return true, fmt.Errorf("final log exists; reading its digest: %w", serr)
		}
		if got.SHA256 != st.SHA256 {
			if _, err := r.uploadChunks(ctx, st); err != nil {
				return true, err
			}
			r.m.met.finalConflicts.Inc()
			r.m.log.Error("another final log of this run id is already stored and is never replaced; this log stays in its live chunk objects",
				"run_id", r.id, "key", store.FinalKey(r.id), "bytes", st.MaskedBytes)
			return true, nil
		}
		err = nil
	}
	if err != nil {
		return true, err
	}
	if st.ChunkObjects > 0 {
		if err := store.DeleteChunks(ctx, r.id, st.ChunkObjects); err != nil {
			return true, fmt.Errorf("remove live chunks: %w", err)
		}
	}
	return true, nil
}

// uploadChunks uploads the bytes of the log file from st's UploadedBytes
// to its MaskedBytes as the next live chunk objects, recording the
// progress in the state, and returns the state after it.
func (r *run) uploadChunks(ctx context.Context, st spool.State) (spool.State, error) {
	store := r.m.opts.Store
	for st.UploadedBytes < st.MaskedBytes {
		n := min(st.MaskedBytes-st.UploadedBytes, r.m.opts.MaxChunkObject)
		body := io.NewSectionReader(storedLog{r.sp}, st.UploadedBytes, n)
		if err := store.PutChunk(ctx, r.id, st.ChunkObjects+1, body, n); err != nil {
			return st, err
		}
		// commitMu keeps commits out while the state is saved (not mu:
		// chunks are still masked into the spool meanwhile).
		r.commitMu.Lock()
		r.mu.Lock()
		next := r.state
		r.mu.Unlock()
		wasClosed := st.Closed
		next.UploadedBytes, next.ChunkObjects = st.UploadedBytes+n, st.ChunkObjects+1
		err := r.sp.SaveState(next)
		r.mu.Lock()
		if err == nil {
			r.state = next
		}
		st = r.state
		r.mu.Unlock()
		r.commitMu.Unlock()
		if err != nil {
			return st, err
		}
		if st.Closed != wasClosed {
			return st, nil // closed meanwhile: the final upload follows at once
		}
	}
	return st, nil
}

// storedLog reads the log as stored (spool.Run.ReadStoredAt): the log
// file, or once closed, the stored log whose tail may be in the tail
// segment.
type storedLog struct{ sp *spool.Run }

func (l storedLog) ReadAt(p []byte, off int64) (int, error) { return l.sp.ReadStoredAt(p, off) }

// finish records a run whose final object is uploaded and removes its
// spool.
func (m *Manager) finish(r *run) {
	// Lock order: m.mu, then r.mu.
	m.mu.Lock()
	defer m.mu.Unlock()
	r.mu.Lock()
	closed := r.closedLocked()
	lastSeq := r.state.AckedSequence
	size := r.state.MaskedBytes
	r.finished = true
	if err := r.sp.Remove(); err != nil {
		m.log.Warn("removing spool of an uploaded run", "run_id", r.id, "err", err)
	}
	r.releaseLocked(false)
	close(r.finalDone)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	m.met.spoolBytes.Sub(float64(size))

	delete(m.runs, r.id)
	m.finished[r.id] = finishedRun{closed: closed, lastSeq: lastSeq}
	m.finishedOrder = append(m.finishedOrder, r.id)
	for len(m.finishedOrder) > m.opts.FinishedRuns {
		delete(m.finished, m.finishedOrder[0])
		m.finishedOrder = m.finishedOrder[1:]
	}
	m.log.Info("run log uploaded", "run_id", r.id, "key", closed.Key, "bytes", closed.Bytes)
}
