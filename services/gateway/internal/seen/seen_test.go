package seen

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestRecordIsOncePerIDAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	s, err := Open(dir, clock)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id    string
		until time.Time
		want  bool
	}{
		{"run-1", now.Add(time.Hour), true},
		{"run-1", now.Add(time.Hour), false},
		{"run-2", now.Add(time.Minute), true},
		{"run-old", now.Add(-time.Minute), true}, // already past: recorded, but forgotten at once
	} {
		got, err := s.Record(tc.id, tc.until)
		if err != nil || got != tc.want {
			t.Fatalf("Record(%q) = %v, %v; want %v", tc.id, got, err, tc.want)
		}
	}
	s.Done("run-1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	now = now.Add(2 * time.Minute) // run-2 expired meanwhile
	s, err = Open(dir, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _ := s.Record("run-1", now.Add(time.Hour)); got {
		t.Error("run-1 was forgotten across a reopen")
	}
	if got, _ := s.Record("run-2", now.Add(time.Hour)); !got {
		t.Error("run-2 should have been forgotten after its expiry")
	}
}

func TestForgetAndTornLine(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record("a", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record("b", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.Done("b")
	s.Close()
	// A crash in the middle of a write leaves a torn last line.
	f, _ := os.OpenFile(filepath.Join(dir, "seen-runs.log"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("c 17")
	f.Close()

	s, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _ := s.Record("a", time.Now().Add(time.Hour)); !got {
		t.Error("a was forgotten, it must be recordable again")
	}
	if got, _ := s.Record("b", time.Now().Add(time.Hour)); got {
		t.Error("b must still be known")
	}
	if _, err := s.Record("bad id", time.Now()); err == nil {
		t.Error("an id with a space must be refused")
	}
}

func TestConcurrentRecordsOfOneIDYieldOneWinner(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.Record("same", time.Now().Add(time.Hour))
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d goroutines won; want exactly 1", wins)
	}
}

func TestUndecidedRunMayBeRecordedOnceMoreAfterARestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	s.Record("decided", until)
	s.Done("decided")
	s.Record("interrupted", until) // the gateway stops before deciding
	s.Close()

	s, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _ := s.Record("decided", until); got {
		t.Fatal("a decided run must be refused as a replay after a restart")
	}
	if got, _ := s.Record("interrupted", until); !got {
		t.Fatal("an undecided run of an earlier life must be taken up again")
	}
	if got, _ := s.Record("interrupted", until); got {
		t.Fatal("only once")
	}
}
