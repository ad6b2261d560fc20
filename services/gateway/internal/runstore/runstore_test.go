package runstore

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSaveLoadDelete(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0).UTC()
	for _, r := range []*Record{
		{RunID: "b", Envelope: []byte{1, 2}, AdmittedAt: t0.Add(time.Second)},
		{RunID: "a", Envelope: []byte{3}, AdmittedAt: t0},
		{RunID: "c", AdmittedAt: t0.Add(2 * time.Second), LeaseID: "l", Epoch: 2, Executor: "x"},
	} {
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	// Replacing a record keeps one file.
	if err := s.Save(&Record{RunID: "c", AdmittedAt: t0.Add(2 * time.Second), LeaseID: "l2", Epoch: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("never"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "runs", "torn.json"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "runs", "x.json.tmp"), []byte("{"), 0o600)

	s2, _ := Open(dir)
	got, errs := s2.Load()
	if len(errs) != 1 {
		t.Fatalf("errs = %v, want the torn file reported", errs)
	}
	if len(got) != 2 || got[0].RunID != "a" || got[1].RunID != "c" || got[1].LeaseID != "l2" || got[1].Epoch != 3 || string(got[0].Envelope) != "\x03" {
		t.Fatalf("got %+v", got)
	}
	if err := s.Save(&Record{RunID: "../evil"}); err == nil {
		t.Fatal("a run id that is a path must be refused")
	}
}
