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

// uploadLoop uploads live chunks every chunk interval, and whenever a
// commit leaves a live chunk's worth (MaxChunkObject) not uploaded, and,
// once the log is closed, the final object; failures are retried with
// backoff until ctx ends.
func (r *run) uploadLoop(ctx context.Context) {
	r.mu.Lock()
	r.leftovers = r.state.Closed
	r.mu.Unlock()
	opts := r.m.opts
	backoff := opts.RetryMin
	timer := time.NewTimer(opts.ChunkInterval)
	defer timer.Stop()
	failures := 0
	for {
		whole := false // kicked: only whole live chunks, the rest waits for the interval
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.kick:
			whole = failures == 0
		}
		final, err := r.uploadOnce(ctx, whole)
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
		if !whole {
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(opts.ChunkInterval)
		}
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
func (r *run) uploadOnce(ctx context.Context, whole bool) (final bool, err error) {
	r.mu.Lock()
	st := r.state
	r.mu.Unlock()
	store := r.m.opts.Store
	if !st.Closed {
		_, err := r.uploadChunks(ctx, st, whole)
		return false, err
	}
	err = r.putFinal(ctx, st)
	if errors.Is(err, s3log.ErrFinalExists) {
		got, serr := store.StatFinal(ctx, r.id)
		if serr != nil {
			return true, fmt.Errorf("final log exists; reading its digest: %w", serr)
		}
		if got.SHA256 != st.SHA256 {
			if _, err := r.uploadChunks(ctx, st, false); err != nil {
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

// putFinal stores the final object of st, a closed log: assembled from
// the live chunks when some can be its parts (finalParts), else put
// whole; put whole too, after an abort, when the server cannot assemble it
// (logged once, counted by s3log).
func (r *run) putFinal(ctx context.Context, st spool.State) error {
	store := r.m.opts.Store
	f := s3log.Final{Bytes: st.MaskedBytes, SHA256: st.SHA256, LastSequence: st.AckedSequence,
		Truncated: st.Cut(), Incomplete: st.Incomplete}
	if ps, ok := store.(partsStore); ok {
		if r.leftovers {
			// Best effort: without the right to list the bucket's uploads,
			// a lifecycle rule removes them (README).
			n, err := ps.AbortUploads(ctx, r.id)
			if err != nil {
				r.m.log.Warn("could not abort the multipart uploads a previous logship left for this run's final log",
					"run_id", r.id, "err", err)
			} else if n > 0 {
				r.m.log.Info("aborted multipart uploads a previous logship left for this run's final log", "run_id", r.id, "uploads", n)
			}
			r.leftovers = false
		}
		if parts := r.finalParts(st); parts != nil {
			err := ps.PutFinalParts(ctx, r.id, parts, storedLog{r.sp}, f)
			if !errors.Is(err, s3log.ErrMultipartUnsupported) {
				return err
			}
			if !r.m.multipartFallback.Swap(true) {
				r.m.log.Warn("S3 cannot assemble final logs from their live chunks; uploading them whole (logged once, counted in hangar_logship_final_multipart_fallbacks_total)",
					"err", err)
			}
		}
	}
	return store.PutFinal(ctx, r.id, io.NewSectionReader(storedLog{r.sp}, 0, st.MaskedBytes), f)
}

// liveChunk is a live chunk object uploaded by this process: the log's
// bytes [off, off+size), stored with ETag etag.
type liveChunk struct {
	off, size int64
	etag      string
}

// finalParts plans the parts of st's final object: each live chunk of
// at least s3log.MinPartSize whose ETag is known (uploaded by this
// process) is copied, server-side; the bytes between them, and after the
// last, are sent from the spool, in parts of about MaxChunkObject. A run
// of sent bytes shorter than s3log.MinPartSize that a copy would follow
// (not the last part) takes that chunk's bytes too. nil when no chunk
// can be copied, or the log is shorter than s3log.MinPartSize: the final
// object is then put whole.
func (r *run) finalParts(st spool.State) []s3log.Part {
	if st.MaskedBytes < s3log.MinPartSize || len(r.chunks) == 0 {
		return nil
	}
	var parts []s3log.Part
	sent := int64(0) // start of the bytes to send not planned yet
	for n := uint64(1); n <= st.ChunkObjects; n++ {
		c, ok := r.chunks[n]
		if !ok || c.etag == "" || c.size < s3log.MinPartSize || c.off+c.size > st.MaskedBytes {
			continue
		}
		if gap := c.off - sent; gap > 0 && gap < s3log.MinPartSize {
			continue // sent with the bytes before it
		}
		parts = r.sendParts(parts, sent, c.off)
		parts = append(parts, s3log.Part{Chunk: n, ETag: c.etag, Offset: c.off, Size: c.size})
		sent = c.off + c.size
	}
	if len(parts) == 0 {
		return nil
	}
	return r.sendParts(parts, sent, st.MaskedBytes)
}

// sendParts appends to parts the bytes [from, to) of the log, to be sent,
// cut into parts of at most MaxChunkObject and all about as large (so each
// is at least s3log.MinPartSize when they are more than one).
func (r *run) sendParts(parts []s3log.Part, from, to int64) []s3log.Part {
	if to <= from {
		return parts
	}
	k := (to - from + r.m.opts.MaxChunkObject - 1) / r.m.opts.MaxChunkObject
	size := (to - from) / k
	for i := range k {
		n := size
		if i == k-1 {
			n = to - from
		}
		parts = append(parts, s3log.Part{Offset: from, Size: n})
		from += n
	}
	return parts
}

// uploadChunks uploads the bytes of the log file from st's UploadedBytes
// to its MaskedBytes as the next live chunk objects, of MaxChunkObject
// bytes (the last of them up to s3log.MinPartSize larger rather than
// leave a smaller one behind), recording the progress in the state, and
// returns the state after it. With whole, it uploads only whole chunks of
// MaxChunkObject and leaves the rest for later.
func (r *run) uploadChunks(ctx context.Context, st spool.State, whole bool) (spool.State, error) {
	store := r.m.opts.Store
	chunk := r.m.opts.MaxChunkObject
	for st.UploadedBytes < st.MaskedBytes {
		left := st.MaskedBytes - st.UploadedBytes
		if whole && left < chunk {
			break
		}
		n := min(left, chunk)
		if !whole && left-n < s3log.MinPartSize {
			n = left
		}
		body := io.NewSectionReader(storedLog{r.sp}, st.UploadedBytes, n)
		etag, err := store.PutChunk(ctx, r.id, st.ChunkObjects+1, body, n)
		if err != nil {
			return st, err
		}
		if r.chunks == nil {
			r.chunks = map[uint64]liveChunk{}
		}
		r.chunks[st.ChunkObjects+1] = liveChunk{off: st.UploadedBytes, size: n, etag: etag}
		// commitMu keeps commits out while the state is saved (not mu:
		// chunks are still masked into the spool meanwhile).
		r.commitMu.Lock()
		r.mu.Lock()
		next := r.state
		r.mu.Unlock()
		wasClosed := st.Closed
		next.UploadedBytes, next.ChunkObjects = st.UploadedBytes+n, st.ChunkObjects+1
		err = r.sp.SaveState(next)
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
