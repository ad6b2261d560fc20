package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReopenTruncatesUncommitted: bytes written after the last commit are
// dropped when the run is reopened; committed state survives.
func TestReopenTruncatesUncommitted(t *testing.T) {
	sp, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.OpenRun("run-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write([]byte("committed\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(State{RunID: "run-1", AckedSequence: 3, MaskedBytes: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write([]byte("tentative")); err != nil {
		t.Fatal(err)
	}
	r.Close()

	st, err := os.Stat(filepath.Join(sp.Dir(), "run-1", "log"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("log file: %v, mode %v", err, st.Mode())
	}
	ids, err := sp.Runs()
	if err != nil || len(ids) != 1 || ids[0] != "run-1" {
		t.Fatalf("Runs() = %v, %v", ids, err)
	}
	r, err = sp.OpenRun("run-1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.State(); got.AckedSequence != 3 || got.MaskedBytes != 10 {
		t.Errorf("state after reopen = %+v", got)
	}
	if r.Size() != 10 {
		t.Errorf("size after reopen = %d, want 10", r.Size())
	}
	buf := make([]byte, 10)
	if _, err := r.ReadAt(buf, 0); err != nil || string(buf) != "committed\n" {
		t.Errorf("ReadAt = %q, %v", buf, err)
	}
	if err := r.Remove(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := sp.Runs(); len(ids) != 0 {
		t.Errorf("Runs() after Remove = %v", ids)
	}
}

func TestOpenRunRejectsInvalidID(t *testing.T) {
	sp, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.OpenRun("../escape"); err != ErrInvalidRunID {
		t.Errorf("OpenRun(../escape) = %v", err)
	}
}

func readTail(t *testing.T, r *Run, off, n int64) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := r.ReadTailAt(buf, off); err != nil {
		t.Fatalf("ReadTailAt(%d, %d): %v", off, n, err)
	}
	return string(buf)
}

func tailFiles(t *testing.T, sp *Spool, id string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(sp.Dir(), id, "tail.*"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// TestTailSegment: the tail segment rolls back to the last commit like the
// log, compaction keeps the bytes from a position on under a new name, and
// a segment the state does not name (a compaction cut short) is removed at
// open.
func TestTailSegment(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact bool
		stray   string // a leftover segment to create before reopening
	}{
		{"rollback", false, ""},
		{"compacted", true, ""},
		{"compaction cut short before the state", false, "tail.1"},
		{"compaction cut short after the state", true, "tail.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			r, err := sp.OpenRun("run-1")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Write([]byte("head")); err != nil {
				t.Fatal(err)
			}
			if _, err := r.WriteTail([]byte("0123456789")); err != nil {
				t.Fatal(err)
			}
			st := State{RunID: "run-1", AckedSequence: 2, MaskedBytes: 4, HeadLimit: 4, TailLimit: 4, TailBytes: 10}
			if err := r.Commit(st); err != nil {
				t.Fatal(err)
			}
			if st.Cut() != 6 {
				t.Errorf("Cut() = %d, want 6", st.Cut())
			}
			base := int64(0)
			if tc.compact {
				if st, err = r.CompactTail(st, 6); err != nil {
					t.Fatal(err)
				}
				base = 6
				if st.TailSegment != 1 || st.TailBase != 6 {
					t.Fatalf("state after compaction: %+v", st)
				}
				if got := tailFiles(t, sp, "run-1"); len(got) != 1 || got[0] != "tail.1" {
					t.Errorf("segments after compaction: %v", got)
				}
			}
			if _, err := r.WriteTail([]byte("not acked")); err != nil {
				t.Fatal(err)
			}
			if r.TailEnd() != 19 {
				t.Errorf("TailEnd() = %d, want 19", r.TailEnd())
			}
			r.Close()
			if tc.stray != "" {
				if err := os.WriteFile(filepath.Join(sp.Dir(), "run-1", tc.stray), []byte("junk"), 0o600); err != nil {
					t.Fatal(err)
				}
			}

			r, err = sp.OpenRun("run-1")
			if err != nil {
				t.Fatal(err)
			}
			if got := r.State(); got != st {
				t.Errorf("state after reopen = %+v, want %+v", got, st)
			}
			if r.TailEnd() != 10 {
				t.Errorf("TailEnd() after reopen = %d, want 10", r.TailEnd())
			}
			if got := readTail(t, r, base, 10-base); got != "0123456789"[base:] {
				t.Errorf("tail = %q", got)
			}
			if tc.compact {
				if _, err := r.ReadTailAt(make([]byte, 1), 0); err == nil {
					t.Error("reading a compacted-away position succeeded")
				}
			}
			want := "tail." + map[bool]string{false: "0", true: "1"}[tc.compact]
			if got := tailFiles(t, sp, "run-1"); len(got) != 1 || got[0] != want {
				t.Errorf("segments after reopen: %v, want [%s]", got, want)
			}
			// Closed: the segments go at the next open.
			st.Closed = true
			if err := r.Commit(st); err != nil {
				t.Fatal(err)
			}
			r.Close()
			r, err = sp.OpenRun("run-1")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := tailFiles(t, sp, "run-1"); len(got) != 0 {
				t.Errorf("segments of a closed log: %v", got)
			}
		})
	}
}
