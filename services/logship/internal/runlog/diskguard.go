package runlog

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// diskGuard keeps logship from filling its spool's disk: below
// Options.MinFreeBytes free, no new run is taken (Open of a run not in the
// spool fails with ErrSpoolFull, which the executor retries), /readyz says
// so and hangar_logship_spool_full is 1; the runs already taken go on
// (their chunks must be spooled to be acknowledged). It measures the free
// space every DiskCheckInterval and at each new run, and takes runs again
// once the space is back.
type diskGuard struct {
	mu   sync.Mutex
	full bool
	free uint64
	err  error
}

// statfsProbe measures free space with statfs(2): the blocks available to
// unprivileged users.
type statfsProbe struct{}

func (statfsProbe) FreeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil //nolint:unconvert // types differ across platforms
}

// check measures the spool's free space and returns whether the spool is
// below its minimum (always false without a minimum). A failed measure
// counts as full: the guard cannot vouch for the disk.
func (g *diskGuard) check(m *Manager) bool {
	if m.opts.MinFreeBytes <= 0 {
		return false
	}
	free, err := m.opts.Disk.FreeBytes(m.opts.Spool.Dir())
	full := err != nil || free < uint64(m.opts.MinFreeBytes)
	g.mu.Lock()
	was := g.full
	g.full, g.free, g.err = full, free, err
	g.mu.Unlock()
	if err == nil {
		m.met.spoolFree.Set(float64(free))
	}
	if full {
		m.met.spoolFull.Set(1)
	} else {
		m.met.spoolFull.Set(0)
	}
	switch {
	case full && !was:
		m.log.Warn("spool disk nearly full: taking no new run until space returns",
			"spool", m.opts.Spool.Dir(), "free_bytes", free, "min_free_bytes", m.opts.MinFreeBytes, "err", err)
	case !full && was:
		m.log.Info("spool disk has room again: taking new runs", "spool", m.opts.Spool.Dir(), "free_bytes", free)
	}
	return full
}

// guardLoop measures the free space every DiskCheckInterval until ctx
// ends.
func (m *Manager) guardLoop(ctx context.Context) {
	if m.opts.MinFreeBytes <= 0 {
		return
	}
	t := time.NewTicker(m.opts.DiskCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.guard.check(m)
		}
	}
}

// admitNewRun returns ErrSpoolFull if a run not in the spool may not be
// taken now. The caller holds m.mu.
func (m *Manager) admitNewRun(runID string) error {
	if m.guard.check(m) {
		m.log.Warn("new run refused: spool disk nearly full", "run_id", runID)
		return fmt.Errorf("%w (less than %d bytes free under %s)", ErrSpoolFull, m.opts.MinFreeBytes, m.opts.Spool.Dir())
	}
	return nil
}

// SpoolReady returns an error, for /readyz, while the spool's disk is
// below its minimum free space.
func (m *Manager) SpoolReady() error {
	g := &m.guard
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.full {
		return nil
	}
	if g.err != nil {
		return fmt.Errorf("spool free space unknown (%v): taking no new run", g.err)
	}
	return fmt.Errorf("spool disk nearly full (%d bytes free, minimum %d): taking no new run", g.free, m.opts.MinFreeBytes)
}
