package cli

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock advances by a second at each reading.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// TestProgressLine: on a terminal the status line (phase, elapsed, bytes of
// log) is drawn last, erased before each output line and drawn again; off a
// terminal (nil progress) only the plain lines are written.
func TestProgressLine(t *testing.T) {
	var term bytes.Buffer
	clock := &fakeClock{t: time.Unix(0, 0)}
	p := &progress{term: &term, runID: "run-1", now: clock.now, start: time.Unix(0, 0), phase: "submitted", done: make(chan struct{})}
	p.setPhase("queued")
	p.write(&term, []byte("[event] admitted\n"), false)
	p.setPhase("phase init")
	p.write(&term, []byte("hello from a "), true)
	p.setPhase("phase init") // mid-line: not drawn over the output
	p.write(&term, []byte("Hangar run\n"), true)
	p.stop()
	p.stop()
	got := strings.ReplaceAll(strings.ReplaceAll(term.String(), "\r\x1b[K", "<erase>"), "\n", "\\n\n")
	golden(t, "progress-terminal", got)

	var plain bytes.Buffer
	var off *progress
	off.setPhase("queued")
	off.write(&plain, []byte("[event] admitted\n"), false)
	off.stop()
	if plain.String() != "[event] admitted\n" {
		t.Errorf("off a terminal: %q", plain.String())
	}
}

func TestByteSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 3 << 20: "3.0 MiB"} {
		if got := byteSize(n); got != want {
			t.Errorf("byteSize(%s) = %q, want %q", strconv.FormatInt(n, 10), got, want)
		}
	}
}
