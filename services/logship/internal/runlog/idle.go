package runlog

import (
	"context"
	"fmt"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/mask"
)

// idleLoop closes, every so often, the logs of runs whose executor did not
// come back (see closeIdle) until ctx ends.
func (m *Manager) idleLoop(ctx context.Context) {
	every := min(max(m.opts.IdleClose/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.closeIdle()
		}
	}
}

// closeIdle closes the log of every run that received no chunk and no
// Open for Options.IdleClose: its executor died or lost its way. The log
// is closed with what arrived (every chunk received, acknowledged or not),
// what the maskers held back, and the footer
//
//	[hangar] log incomplete: nothing from the executor for <d>; closed by logship with what arrived
//
// and its final object is marked incomplete (metadata hangar-incomplete).
// Then it is uploaded and its spool, file and uploader released as for any
// closed log. An executor that comes back later finds the log closed: its
// chunks past the last one stored are refused (ErrClosed).
func (m *Manager) closeIdle() {
	now := m.now()
	m.mu.Lock()
	runs := make([]*run, 0, len(m.runs))
	for _, r := range m.runs {
		runs = append(runs, r)
	}
	m.mu.Unlock()
	for _, r := range runs {
		closed, err := r.closeIfIdle(now)
		if err != nil {
			m.log.Error("closing the log of an idle run failed; retried later", "run_id", r.id, "err", err)
			continue
		}
		if closed {
			m.met.idleClosed.Inc()
			m.log.Warn("closed the log of a run whose executor sent nothing; marked incomplete",
				"run_id", r.id, "idle", m.opts.IdleClose, "last_sequence", r.lastSeqSeen())
			r.wake()
		}
	}
}

// closeIfIdle closes r's log if it has been idle for Options.IdleClose at
// now.
func (r *run) closeIfIdle(now time.Time) (bool, error) {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	idle := r.m.opts.IdleClose
	if r.finished || r.state.Closed || now.Sub(r.lastChunk) < idle {
		return false, nil
	}
	r.gen++ // a session still attached is superseded
	if r.set == nil {
		// Loaded from the spool and never reopened: no maskers yet. The
		// committed point is clean; there are no secrets to look for in
		// a footer.
		empty, _ := mask.NewSet(nil, mask.Options{})
		if err := r.resetLocked(empty); err != nil {
			return false, err
		}
	}
	footer := fmt.Sprintf("[hangar] log incomplete: nothing from the executor for %s; closed by logship with what arrived\n", idle)
	if err := r.closeLocked(footer); err != nil {
		return false, err
	}
	return true, nil
}

// lastSeqSeen returns the last sequence of the run's log.
func (r *run) lastSeqSeen() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state.AckedSequence
}
