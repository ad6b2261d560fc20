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
