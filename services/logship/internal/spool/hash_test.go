package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// TestSHA256 checks Run.SHA256 against the SHA-256 of the log file's bytes
// on disk, whether the bytes were hashed as written, cut back and written
// again, or were there before the run was reopened (and are read back).
func TestSHA256(t *testing.T) {
	type step struct {
		write    string // append
		truncate int64  // cut to this size (when write is "" and reopen false)
		commit   bool   // commit what is written
		reopen   bool   // close and open the run again
		hash     bool   // ask for the hash midway too
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"empty", nil},
		{"written", []step{{write: "hello "}, {write: "world\n"}}},
		{"hash midway then more", []step{{write: "abc"}, {hash: true}, {write: "def"}}},
		{"cut below the hashed bytes", []step{{write: "hello world"}, {truncate: 5}, {write: ", there"}}},
		{"cut to the end", []step{{write: "hello"}, {truncate: 5}, {write: "!"}}},
		{"reopened with committed bytes", []step{{write: "before\n", commit: true}, {write: "dropped"}, {reopen: true}, {write: "after\n"}}},
		{"reopened, hashed, more", []step{{write: "one\n", commit: true}, {reopen: true}, {hash: true}, {write: "two\n"}}},
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
			defer func() { r.Close() }()
			for _, s := range tc.steps {
				switch {
				case s.write != "":
					if _, err := r.Write([]byte(s.write)); err != nil {
						t.Fatal(err)
					}
					if s.commit {
						if err := r.Commit(State{RunID: "run-1", MaskedBytes: r.Size()}); err != nil {
							t.Fatal(err)
						}
					}
				case s.reopen:
					r.Close()
					if r, err = sp.OpenRun("run-1"); err != nil {
						t.Fatal(err)
					}
				case s.hash:
					if _, err := r.SHA256(); err != nil {
						t.Fatal(err)
					}
				default:
					if err := r.Truncate(s.truncate); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := r.SHA256()
			if err != nil {
				t.Fatal(err)
			}
			onDisk, err := os.ReadFile(filepath.Join(sp.Dir(), "run-1", "log"))
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(onDisk)) != r.Size() {
				t.Fatalf("log file has %d bytes, Size() = %d", len(onDisk), r.Size())
			}
			want := sha256.Sum256(onDisk)
			if got != hex.EncodeToString(want[:]) {
				t.Fatalf("SHA256() = %s, want %x (of %q)", got, want, onDisk)
			}
		})
	}
}

// TestAppendTail checks that AppendTail puts the chosen tail bytes after
// the log file's bytes, and that SHA256 is then that of the file, whether
// the digest came from hashing the tail as it was written (a log not cut:
// all of the tail after a whole head) or from reading the appended bytes
// back (a kept part of the tail, a notice between, a tail cut back, a
// compacted segment, a reopened run).
func TestAppendTail(t *testing.T) {
	type step struct {
		head, tail string // append to the log file / the tail segment
		truncTail  int64  // cut the tail segment back to this end (when >= 0 and nothing else)
		commit     bool   // commit what is written
		reopen     bool   // close and open the run again
		compact    int64  // compact the tail from this position (> 0)
	}
	for _, tc := range []struct {
		name       string
		steps      []step
		from, n    int64 // the tail bytes appended
		wantLog    string
		wantHashed bool // the digest needs no read back
	}{
		{"whole tail after the head", []step{{head: "head "}, {tail: "tail-1 "}, {tail: "tail-2"}}, 0, 13, "head tail-1 tail-2", true},
		{"empty tail", []step{{head: "head"}}, 0, 0, "head", true},
		{"part of the tail", []step{{head: "head "}, {tail: "cut kept"}}, 4, 4, "head kept", false},
		{"notice between", []step{{head: "head "}, {tail: "tail"}, {head: "[notice] "}}, 0, 4, "head [notice] tail", false},
		{"tail cut back and written again", []step{{head: "h "}, {tail: "abcdef"}, {truncTail: 3}, {tail: "XYZ"}}, 0, 6, "h abcXYZ", false},
		{"compacted segment", []step{{head: "h "}, {tail: "012345", commit: true}, {compact: 2}, {tail: "67"}}, 2, 6, "h 234567", false},
		{"reopened run", []step{{head: "h ", tail: "ab", commit: true}, {reopen: true}, {tail: "cd"}}, 0, 4, "h abcd", false},
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
			defer func() { r.Close() }()
			for _, s := range tc.steps {
				switch {
				case s.reopen:
					r.Close()
					if r, err = sp.OpenRun("run-1"); err != nil {
						t.Fatal(err)
					}
				case s.compact > 0:
					if _, err := r.CompactTail(r.State(), s.compact); err != nil {
						t.Fatal(err)
					}
				case s.head == "" && s.tail == "":
					if err := r.TruncateTail(s.truncTail); err != nil {
						t.Fatal(err)
					}
				}
				if s.head != "" {
					if _, err := r.Write([]byte(s.head)); err != nil {
						t.Fatal(err)
					}
				}
				if s.tail != "" {
					if _, err := r.WriteTail([]byte(s.tail)); err != nil {
						t.Fatal(err)
					}
				}
				if s.commit {
					if err := r.Commit(State{RunID: "run-1", MaskedBytes: r.Size(), TailBytes: r.TailEnd()}); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := r.AppendTail(tc.from, tc.n); err != nil {
				t.Fatal(err)
			}
			if hashed := r.sum != nil && r.summed == r.size; hashed != tc.wantHashed {
				t.Errorf("digest known without reading back: %v, want %v", hashed, tc.wantHashed)
			}
			got, err := r.SHA256()
			if err != nil {
				t.Fatal(err)
			}
			onDisk, err := os.ReadFile(filepath.Join(sp.Dir(), "run-1", "log"))
			if err != nil {
				t.Fatal(err)
			}
			if string(onDisk) != tc.wantLog || r.Size() != int64(len(onDisk)) {
				t.Fatalf("log file %q (Size %d), want %q", onDisk, r.Size(), tc.wantLog)
			}
			if want := sha256.Sum256(onDisk); got != hex.EncodeToString(want[:]) {
				t.Fatalf("SHA256() = %s, want %x (of %q)", got, want, onDisk)
			}
		})
	}
}

// TestAppendTailOutside refuses bytes the tail segment does not hold.
func TestAppendTailOutside(t *testing.T) {
	sp, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.OpenRun("run-1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.AppendTail(0, 1); err == nil {
		t.Fatal("AppendTail without a tail segment: no error")
	}
	if _, err := r.WriteTail([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]int64{{0, 4}, {2, 2}, {-1, 1}} {
		if err := r.AppendTail(c[0], c[1]); err == nil {
			t.Errorf("AppendTail(%d, %d) of a 3-byte tail: no error", c[0], c[1])
		}
	}
}
