package relay

import (
	"testing"
	"time"
)

// TestNextWait: the pump lets output gather in the pipe only while it flows
// fast and from one pipe, never longer than gather, and never so long that
// the last cycle's rate would fill more than a quarter of the pipe; a
// command printing now and then is read as soon as it writes.
func TestNextWait(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		c    cycle
		want time.Duration
	}{
		{"woken once after a pause: a line printed alone is read at once", cycle{since: time.Second, got: 6, single: true, capacity: mib}, 0},
		{"woken right after the previous wake-up: output flows, gather", cycle{since: 20 * time.Microsecond, got: 4096, single: true, capacity: mib}, gather},
		{"woken but nothing read (end of file, a full ring)", cycle{since: 20 * time.Microsecond, single: true, capacity: mib}, 0},
		{"a sleep found output: gather again", cycle{slept: gather, got: 200 << 10, single: true, capacity: mib}, gather},
		{"a sleep found nothing: back to waiting for a write", cycle{slept: gather, single: true, capacity: mib}, 0},
		{"a sleep found half the pipe: sleep a quarter pipe's time", cycle{slept: gather, got: mib / 2, single: true, capacity: mib}, gather / 2},
		{"the default 64 KiB pipe filled in one sleep", cycle{slept: gather, got: 64 << 10, single: true, capacity: 64 << 10}, gather / 4},
		{"two pipes open: never (their order)", cycle{since: 20 * time.Microsecond, got: 4096, capacity: mib}, 0},
		{"two pipes open after a sleep: never", cycle{slept: gather, got: 4096, capacity: mib}, 0},
		{"the first cycle (output before the pump started)", cycle{since: gather, got: 4096, single: true, capacity: mib}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := nextWait(tc.c)
			if got != tc.want {
				t.Errorf("nextWait(%+v) = %v, want %v", tc.c, got, tc.want)
			}
			if got > gather {
				t.Errorf("nextWait(%+v) = %v, over the bound %v", tc.c, got, gather)
			}
		})
	}
}
