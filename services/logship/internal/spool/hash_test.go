package spool

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
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

// TestStoredLog checks the stored log of a closed run whose tail stays in
// the tail segment: StoredSHA256 is the SHA-256 of the log file's bytes,
// the notice and the chosen tail bytes, whether it came from hashing the
// tail as it was written (a log not cut: all of the tail after a whole
// head, no notice) or from reading bytes back (a kept part of the tail, a
// notice, a tail cut back, a compacted segment, a reopened run); and
// ReadStoredAt reads exactly those bytes, in any pieces, also after the
// run is reopened.
func TestStoredLog(t *testing.T) {
	type step struct {
		head, tail string // append to the log file / the tail segment
		truncTail  int64  // cut the tail segment back to this end (when nothing else)
		commit     bool   // commit what is written
		reopen     bool   // close and open the run again
		compact    int64  // compact the tail from this position (> 0)
	}
	for _, tc := range []struct {
		name       string
		steps      []step
		notice     string
		from, n    int64 // the tail bytes kept
		wantLog    string
		wantHashed bool // the digest needs no read back
	}{
		{"whole tail after the head", []step{{head: "head "}, {tail: "tail-1 "}, {tail: "tail-2"}}, "", 0, 13, "head tail-1 tail-2", true},
		{"part of the tail, a notice", []step{{head: "head"}, {tail: "cut kept"}}, "\n[cut]\n", 4, 4, "head\n[cut]\nkept", false},
		{"a notice, no tail kept", []step{{head: "head"}, {tail: "cut"}}, "[cut]", 3, 0, "head[cut]", false},
		{"tail cut back and written again", []step{{head: "h "}, {tail: "abcdef"}, {truncTail: 3}, {tail: "XYZ"}}, "", 0, 6, "h abcXYZ", false},
		{"compacted segment", []step{{head: "h "}, {tail: "012345", commit: true}, {compact: 2}, {tail: "67"}}, "", 2, 6, "h 234567", false},
		{"reopened run", []step{{head: "h ", tail: "ab", commit: true}, {reopen: true}, {tail: "cd"}}, "", 0, 4, "h abcd", false},
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
			hashed := tc.notice == "" && r.tsum != nil && r.summed == r.size && tc.from == 0 && tc.n == r.tsummed
			if hashed != tc.wantHashed {
				t.Errorf("digest known without reading back: %v, want %v", hashed, tc.wantHashed)
			}
			got, err := r.StoredSHA256([]byte(tc.notice), tc.from, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if want := sha256.Sum256([]byte(tc.wantLog)); got != hex.EncodeToString(want[:]) {
				t.Fatalf("StoredSHA256 = %s, want %x (of %q)", got, want, tc.wantLog)
			}
			st := r.State()
			st.Closed, st.SHA256 = true, got
			st.StoredHead, st.Notice, st.TailBytes = r.Size(), tc.notice, tc.from+tc.n
			st.MaskedBytes = int64(len(tc.wantLog))
			if err := r.Commit(st); err != nil {
				t.Fatal(err)
			}
			for pass := range 2 {
				if pass == 1 {
					r.Close()
					if r, err = sp.OpenRun("run-1"); err != nil {
						t.Fatal(err)
					}
				}
				for _, piece := range []int{1, 3, 64} {
					var b []byte
					buf := make([]byte, piece)
					for off := int64(0); ; {
						n, err := r.ReadStoredAt(buf, off)
						b = append(b, buf[:n]...)
						off += int64(n)
						if err == io.EOF {
							break
						}
						if err != nil {
							t.Fatal(err)
						}
					}
					if string(b) != tc.wantLog {
						t.Errorf("reopened %v, read in pieces of %d: %q, want %q", pass == 1, piece, b, tc.wantLog)
					}
				}
			}
		})
	}
}

// TestStoredSHA256Outside refuses tail bytes the tail segment does not hold.
func TestStoredSHA256Outside(t *testing.T) {
	r := openTestRun(t)
	if _, err := r.StoredSHA256(nil, 0, 1); err == nil {
		t.Fatal("StoredSHA256 without a tail segment: no error")
	}
	if _, err := r.WriteTail([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]int64{{0, 4}, {2, 2}, {-1, 1}} {
		if _, err := r.StoredSHA256(nil, c[0], c[1]); err == nil {
			t.Errorf("StoredSHA256 of tail bytes %d+%d of a 3-byte tail: no error", c[0], c[1])
		}
	}
}
