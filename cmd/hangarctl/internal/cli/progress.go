package cli

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress is the live status line of a followed run on a terminal: the
// run's phase, the time since it was submitted and the bytes of log received,
// redrawn in place (carriage return, erase line) every few tenths of a second
// and after every line of output. Output written through it (events, the
// live log) erases the status line first, so the line always stays last.
// A nil *progress writes the output as is: off a terminal there is no
// status line, only the plain lines.
type progress struct {
	term  io.Writer
	runID string
	now   func() time.Time

	mu      sync.Mutex
	start   time.Time
	phase   string
	bytes   int64
	shown   bool
	midLine bool // the last output did not end a line: do not draw over it
	done    chan struct{}
	stopped bool
}

// newProgress starts the status line of runID on term.
func newProgress(term io.Writer, runID string, now func() time.Time) *progress {
	p := &progress{term: term, runID: runID, now: now, start: now(), phase: "submitted", done: make(chan struct{})}
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				p.mu.Lock()
				p.redraw()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// write writes b to out (the output stream, which shows on the same
// terminal) with the status line erased first and drawn again after.
func (p *progress) write(out io.Writer, b []byte, logBytes bool) {
	if p == nil {
		_, _ = out.Write(b)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.erase()
	_, _ = out.Write(b)
	if logBytes {
		p.bytes += int64(len(b))
	}
	if len(b) > 0 {
		p.midLine = b[len(b)-1] != '\n'
	}
	p.redraw()
}

// setPhase records the run's current phase (or state: queued, finished).
func (p *progress) setPhase(phase string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase = phase
	p.redraw()
}

// stop erases the status line for good.
func (p *progress) stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.stopped = true
		close(p.done)
		p.erase()
	}
}

func (p *progress) erase() {
	if p.shown {
		_, _ = io.WriteString(p.term, "\r\x1b[K")
		p.shown = false
	}
}

func (p *progress) redraw() {
	if p.stopped || p.midLine {
		return
	}
	p.erase()
	fmt.Fprintf(p.term, "▸ %s · %s · %s · %s of log", p.runID, p.phase, p.now().Sub(p.start).Truncate(100*time.Millisecond), byteSize(p.bytes))
	p.shown = true
}

func byteSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}
