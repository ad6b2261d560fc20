package spool

import (
	"os"
	"path/filepath"
	"testing"
)

func TestValidRunID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"run-1", true},
		{"01J9ZK6Q2W3E4R5T6Y7U8I9O0P", true},
		{"a:b@c+d=e_f.g", true},
		{"", false},
		{".hidden", false},
		{"..", false},
		{"a/b", false},
		{"a\\b", false},
		{"a b", false},
		{string(make([]byte, 201)), false},
	} {
		if got := ValidRunID(tc.id); got != tc.want {
			t.Errorf("ValidRunID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

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
