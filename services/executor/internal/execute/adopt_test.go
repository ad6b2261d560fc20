package execute

import (
	"log/slog"
	"testing"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// TestSequenceMap: the output count logship stores, from the chunks the
// executor cut (the sequence map) and logship's next_sequence, including
// chunks cut but never stored and system chunks that carry no output.
func TestSequenceMap(t *testing.T) {
	e := New(Config{StateDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	off := e.openOffsets("run-1", 0, nil)
	for _, c := range []struct {
		st logsv1.Stream
		n  int
	}{
		{logsv1.Stream_STREAM_SYSTEM, 20},  // 1
		{logsv1.Stream_STREAM_STDOUT, 100}, // 2: 100
		{logsv1.Stream_STREAM_STDERR, 50},  // 3: 150
		{logsv1.Stream_STREAM_SYSTEM, 9},   // 4: 150
		{logsv1.Stream_STREAM_STDOUT, 7},   // 5: 157
	} {
		off.cut(uint64(len(off.pending)+1), c.st, c.n)
	}
	off.ack(3)
	if d, _ := off.durable.Get(); d != 150 {
		t.Errorf("durable after ack 3 = %d, want 150", d)
	}
	off.close()
	tests := []struct {
		next      uint64
		want      uint64
		wantKeep  int
		wantError bool
	}{
		{next: 1, want: 0, wantKeep: 0},
		{next: 2, want: 0, wantKeep: 1},
		{next: 3, want: 100, wantKeep: 2},
		{next: 5, want: 150, wantKeep: 4},
		{next: 6, want: 157, wantKeep: 5},
		{next: 9, wantError: true}, // logship stores chunks the map never saw
	}
	for _, tc := range tests {
		stored, keep, err := e.storedThrough("run-1", tc.next)
		if (err != nil) != tc.wantError {
			t.Errorf("next %d: err %v", tc.next, err)
			continue
		}
		if err == nil && (stored != tc.want || len(keep) != tc.wantKeep) {
			t.Errorf("next %d: stored %d (%d entries kept), want %d (%d)", tc.next, stored, len(keep), tc.want, tc.wantKeep)
		}
	}
	// Reopened after a restart at next 3: the map keeps chunks 1-2 and goes
	// on from there; the chunks cut again get the numbers of the lost ones.
	_, keep, _ := e.storedThrough("run-1", 3)
	off = e.openOffsets("run-1", 100, keep)
	off.cut(3, logsv1.Stream_STREAM_STDOUT, 1)
	off.close()
	if stored, _, err := e.storedThrough("run-1", 4); err != nil || stored != 101 {
		t.Errorf("after the restart: stored %d, %v; want 101", stored, err)
	}
}
