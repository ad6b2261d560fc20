package runlog

import (
	"context"
	"fmt"
)

// Reader follows the committed log of a run in the spool.
type Reader struct {
	r      *run
	closed bool
}

// NewReader returns a Reader of a run whose log is in the spool, or
// ErrNotFound (the run is unknown or finished: its log is in S3).
func (m *Manager) NewReader(runID string) (*Reader, error) {
	m.mu.Lock()
	r := m.runs[runID]
	m.mu.Unlock()
	if r == nil {
		return nil, ErrNotFound
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fileClosed {
		return nil, ErrNotFound
	}
	r.readers++
	return &Reader{r: r}, nil
}

// Next returns up to max committed bytes from offset, waiting until there
// are some. end is true, with no data, once the log is closed and offset is
// at or past its end.
func (rd *Reader) Next(ctx context.Context, offset int64, max int) (data []byte, end bool, err error) {
	r := rd.r
	for {
		r.mu.Lock()
		size, closed, changed := r.state.MaskedBytes, r.state.Closed, r.changed
		r.mu.Unlock()
		if offset < size {
			buf := make([]byte, min(int64(max), size-offset))
			n, err := r.sp.ReadStoredAt(buf, offset)
			if n < len(buf) {
				return nil, false, fmt.Errorf("read spool: %w", err)
			}
			return buf, false, nil
		}
		if closed {
			return nil, true, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-changed:
		}
	}
}

// Close releases the Reader.
func (rd *Reader) Close() {
	if rd.closed {
		return
	}
	rd.closed = true
	rd.r.mu.Lock()
	defer rd.r.mu.Unlock()
	rd.r.releaseLocked(true)
}
