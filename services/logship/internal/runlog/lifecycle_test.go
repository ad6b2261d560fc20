package runlog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// fakeClock is a clock the test moves by hand: the idle close is decided
// by it, never by the time a test takes.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeDisk is a free-space probe the test sets by hand. It stands for
// statfs(2) on the spool's file system: filling a real file system up to
// its last megabytes is not something a shared test machine allows.
type fakeDisk struct {
	mu   sync.Mutex
	free uint64
	err  error
}

func (d *fakeDisk) FreeBytes(string) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.free, d.err
}

func (d *fakeDisk) set(free uint64, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free, d.err = free, err
}

// lifeEnv is a Manager on a spool with a fake clock, a fake disk and a
// metrics registry.
type lifeEnv struct {
	t     *testing.T
	dir   string
	store *memStore
	clock *fakeClock
	disk  *fakeDisk
	reg   *prometheus.Registry
	m     *Manager
}

func newLifeEnv(t *testing.T, minFree int64) *lifeEnv {
	e := &lifeEnv{t: t, dir: t.TempDir(), store: &memStore{finals: map[string][]byte{}},
		clock: &fakeClock{now: time.Unix(1_800_000_000, 0)}, disk: &fakeDisk{free: 1 << 40}}
	e.start(minFree)
	return e
}

func (e *lifeEnv) start(minFree int64) {
	e.t.Helper()
	sp, err := spool.Open(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg = prometheus.NewRegistry()
	e.m, err = New(Options{Spool: sp, Store: e.store, ChunkInterval: time.Hour, CloseWait: 5 * time.Second,
		IdleClose: 30 * time.Minute, Now: e.clock.Now, MinFreeBytes: minFree, Disk: e.disk,
		DiskCheckInterval: time.Hour, Registry: e.reg})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(e.m.Close)
}

func (e *lifeEnv) restart(minFree int64) {
	e.m.Close()
	e.start(minFree)
}

// waitFinished waits until the run's final object is uploaded and its
// spool removed.
func (e *lifeEnv) waitFinished(runID string) {
	e.t.Helper()
	e.m.mu.Lock()
	r := e.m.runs[runID]
	_, done := e.m.finished[runID]
	e.m.mu.Unlock()
	if !done {
		if r == nil {
			e.t.Fatalf("run %s not held", runID)
		}
		select {
		case <-r.finalDone:
		case <-time.After(30 * time.Second):
			e.t.Fatalf("run %s: final object not uploaded", runID)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, runID)); !errors.Is(err, os.ErrNotExist) {
		e.t.Errorf("spool of %s still there: %v", runID, err)
	}
}

func (e *lifeEnv) final(runID string) (string, s3log.Final) {
	e.store.mu.Lock()
	defer e.store.mu.Unlock()
	return string(e.store.finals[runID]), e.store.meta[runID]
}

const idleFooter = "[hangar] log incomplete: nothing from the executor for 30m0s; closed by logship with what arrived\n"

// TestIdleClose: a run whose executor does not come back is closed once
// it has been silent for IdleClose: its final object holds what arrived
// (acknowledged or not, what the masker held back included), then the
// footer, and is marked incomplete; its spool is removed. Not a moment
// before: a chunk restarts the wait. An executor that comes back finds
// the log closed.
func TestIdleClose(t *testing.T) {
	e := newLifeEnv(t, 0)
	s, _, err := e.m.Open(OpenRequest{RunID: "idle", Secrets: []Secret{{Name: "S", Value: []byte("hunter2-correct-horse")}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Chunk(Chunk{Sequence: 1, Stream: StreamStdout, Data: []byte("step 1 done\n")}); err != nil {
		t.Fatal(err)
	}
	e.clock.add(29 * time.Minute)
	e.m.closeIdle()
	// Not idle long enough; a chunk that ends inside a possible secret
	// (not acknowledged) restarts the wait.
	if _, _, err := s.Chunk(Chunk{Sequence: 2, Stream: StreamStdout, Data: []byte("token hunter2-")}); err != nil {
		t.Fatal(err)
	}
	e.clock.add(29 * time.Minute)
	e.m.closeIdle()
	if st := e.m.runs["idle"].state; st.Closed {
		t.Fatal("closed before IdleClose of silence")
	}
	e.clock.add(2 * time.Minute)
	e.m.closeIdle()
	e.waitFinished("idle")

	got, meta := e.final("idle")
	want := "step 1 done\ntoken hunter2-\n" + idleFooter
	if got != want {
		t.Errorf("final = %q, want %q", got, want)
	}
	if !meta.Incomplete || meta.LastSequence != 2 {
		t.Errorf("final metadata %+v, want incomplete through sequence 2", meta)
	}
	if n := testutil.ToFloat64(e.m.met.idleClosed); n != 1 {
		t.Errorf("hangar_logship_runs_idle_closed_total = %v, want 1", n)
	}
	if n := testutil.ToFloat64(e.m.met.runsOpen); n != 0 {
		t.Errorf("hangar_logship_runs_open = %v, want 0", n)
	}
	// The executor comes back: its old stream is superseded; reopened, the
	// log is closed and stays as stored.
	if _, _, err := s.Write(Chunk{Sequence: 3, Data: []byte("late\n")}); err == nil {
		t.Error("a chunk on the stream of before the idle close was taken")
	}
	s2, next, err := e.m.Open(OpenRequest{RunID: "idle"})
	if err != nil || next != 3 {
		t.Fatalf("Open after the idle close = %d, %v; want next 3", next, err)
	}
	if _, _, err := s2.Write(Chunk{Sequence: 3, Data: []byte("late\n")}); !errors.Is(err, ErrClosed) {
		t.Errorf("chunk after the idle close: %v, want ErrClosed", err)
	}
	if got2, _ := e.final("idle"); got2 != got {
		t.Errorf("final changed to %q", got2)
	}
}

// TestIdleCloseAfterRestart: a run left in the spool by a logship that
// stopped, whose executor never reopens it, is closed after IdleClose with
// what was committed.
func TestIdleCloseAfterRestart(t *testing.T) {
	e := newLifeEnv(t, 0)
	s, _, err := e.m.Open(OpenRequest{RunID: "orphan"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Chunk(Chunk{Sequence: 1, Stream: StreamStdout, Data: []byte("partial line:")}); err != nil { // ':' begins no secret nor known-format anchor: a clean point
		t.Fatal(err)
	}
	e.restart(0)
	e.clock.add(31 * time.Minute)
	e.m.closeIdle()
	e.waitFinished("orphan")
	if got, meta := e.final("orphan"); got != "partial line:\n"+idleFooter || !meta.Incomplete {
		t.Errorf("final = %q (%+v)", got, meta)
	}
}

// TestDiskGuard: below the minimum free space, a new run is refused with
// ErrSpoolFull, the readiness check fails and the metric says so, while a
// run already taken goes on; once space returns, new runs are taken again.
// The free space comes from a fake probe (see fakeDisk).
func TestDiskGuard(t *testing.T) {
	e := newLifeEnv(t, 100<<20)
	s, _, err := e.m.Open(OpenRequest{RunID: "before"})
	if err != nil {
		t.Fatal(err)
	}
	e.disk.set(50<<20, nil)
	if _, _, err := e.m.Open(OpenRequest{RunID: "new"}); !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("Open of a new run with 50 MiB free: %v, want ErrSpoolFull", err)
	}
	if err := e.m.SpoolReady(); err == nil || !strings.Contains(err.Error(), "nearly full") {
		t.Errorf("SpoolReady = %v, want the spool nearly full", err)
	}
	if v := testutil.ToFloat64(e.m.met.spoolFull); v != 1 {
		t.Errorf("hangar_logship_spool_full = %v, want 1", v)
	}
	// The run taken before goes on, and may be reopened.
	if ack, send, err := s.Chunk(Chunk{Sequence: 1, Data: []byte("still going\n")}); err != nil || !send || ack != 1 {
		t.Errorf("chunk of a run taken before: %d %v %v", ack, send, err)
	}
	if _, next, err := e.m.Open(OpenRequest{RunID: "before"}); err != nil || next != 2 {
		t.Errorf("reopen of a run taken before: %d %v", next, err)
	}
	// A probe that fails counts as full.
	e.disk.set(0, errors.New("statfs: input/output error"))
	if _, _, err := e.m.Open(OpenRequest{RunID: "new"}); !errors.Is(err, ErrSpoolFull) {
		t.Errorf("Open with the probe failing: %v, want ErrSpoolFull", err)
	}
	e.disk.set(200<<20, nil)
	e.m.guard.check(e.m) // the guard's periodic look
	if err := e.m.SpoolReady(); err != nil {
		t.Errorf("SpoolReady with room again: %v", err)
	}
	if v := testutil.ToFloat64(e.m.met.spoolFull); v != 0 {
		t.Errorf("hangar_logship_spool_full = %v, want 0", v)
	}
	if _, _, err := e.m.Open(OpenRequest{RunID: "new"}); err != nil {
		t.Errorf("Open of a new run with room again: %v", err)
	}
}

// TestSecondOpenOfFinishedRun: a finished log is never replaced. A later
// Open of the run id, by a logship that no longer remembers the run, is
// answered from the final object in S3 (next sequence one past its last
// chunk, later chunks refused). If S3 cannot be asked at that Open, the
// new log is taken, but its final upload meets the precondition: the
// stored log stays, the new one is kept in live chunk objects, counted.
func TestSecondOpenOfFinishedRun(t *testing.T) {
	e := newLifeEnv(t, 0)
	s, _, err := e.m.Open(OpenRequest{RunID: "done"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Chunk(Chunk{Sequence: 1, Data: []byte("the first log\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	e.waitFinished("done")
	first, _ := e.final("done")

	e.restart(0) // forgets the finished runs
	s2, next, err := e.m.Open(OpenRequest{RunID: "done"})
	if err != nil || next != 2 {
		t.Fatalf("second Open = %d, %v; want next 2, from the stored log", next, err)
	}
	if _, _, err := s2.Write(Chunk{Sequence: 2, Data: []byte("another log\n")}); !errors.Is(err, ErrClosed) {
		t.Errorf("chunk after the stored log's last: %v, want ErrClosed", err)
	}
	if ack, resend, err := s2.Write(Chunk{Sequence: 1, Data: []byte("the first log\n")}); err != nil || !resend || ack != 1 {
		t.Errorf("resend of the stored log's chunk: %d %v %v", ack, resend, err)
	}

	// S3 unreachable at the Open: the precondition keeps the stored log.
	e.restart(0)
	e.store.mu.Lock()
	e.store.statErr = errors.New("connection refused")
	e.store.mu.Unlock()
	s3, next, err := e.m.Open(OpenRequest{RunID: "done"})
	if err != nil || next != 1 {
		t.Fatalf("Open while S3 cannot be asked = %d, %v; want a new run", next, err)
	}
	if _, _, err := s3.Chunk(Chunk{Sequence: 1, Data: []byte("a second log\n")}); err != nil {
		t.Fatal(err)
	}
	e.store.mu.Lock()
	e.store.statErr = nil
	e.store.mu.Unlock()
	if _, err := s3.Close(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	e.waitFinished("done")
	if got, _ := e.final("done"); got != first {
		t.Errorf("the stored log was replaced by %q", got)
	}
	e.store.mu.Lock()
	kept := string(e.store.chunks["done"][1])
	e.store.mu.Unlock()
	if kept != "a second log\n" {
		t.Errorf("the second log's live chunk = %q, want it kept", kept)
	}
	if n := testutil.ToFloat64(e.m.met.finalConflicts); n != 1 {
		t.Errorf("hangar_logship_final_conflicts_total = %v, want 1", n)
	}
}

// TestSecretsOverCap: an Open whose secrets total more than MaxSecretBytes
// is refused before any masker is built, with an error naming the cap and
// never a value.
func TestSecretsOverCap(t *testing.T) {
	e := newLifeEnv(t, 0)
	big := strings.Repeat("k", MaxSecretBytes/2+1)
	_, _, err := e.m.Open(OpenRequest{RunID: "big", Secrets: []Secret{{Name: "A", Value: []byte(big)}, {Name: "B", Value: []byte(big)}}})
	if !errors.Is(err, ErrSecretsTooLarge) {
		t.Fatalf("Open = %v, want ErrSecretsTooLarge", err)
	}
	if strings.Contains(err.Error(), "kkkkkk") || !strings.Contains(err.Error(), "262144") {
		t.Errorf("error %q: want the cap, never a value", err)
	}
	if _, _, err := e.m.Open(OpenRequest{RunID: "fits", Secrets: []Secret{{Name: "A", Value: []byte(big)}}}); err != nil {
		t.Errorf("Open within the cap: %v", err)
	}
}

// TestNotMaskedNoticeInLog: the run's own log names (never shows) the
// secrets too short to be masked, once, as its first line, also when the
// run is reopened.
func TestNotMaskedNoticeInLog(t *testing.T) {
	e := newLifeEnv(t, 0)
	secrets := []Secret{{Name: "PIN", Value: []byte("q9Z")}, {Name: "TOKEN", Value: []byte("long-enough-token")}, {Value: []byte("ab")}}
	s, _, err := e.m.Open(OpenRequest{RunID: "short", Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Chunk(Chunk{Sequence: 1, Data: []byte("pin q9Z token long-enough-token\n")}); err != nil {
		t.Fatal(err)
	}
	s, next, err := e.m.Open(OpenRequest{RunID: "short", Secrets: secrets})
	if err != nil || next != 2 {
		t.Fatalf("reopen = %d, %v", next, err)
	}
	if _, err := s.Close(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	e.waitFinished("short")
	got, _ := e.final("short")
	want := "[hangar] not masked in this log (shorter than 6 bytes): PIN, #3\npin q9Z token ******\n"
	if got != want {
		t.Errorf("final = %q, want %q", got, want)
	}
}
