package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
)

// openTestRun opens run-1 in a new spool, closed at the test's end.
func openTestRun(t *testing.T) *Run {
	t.Helper()
	sp, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.OpenRun("run-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Commits run while writes go on (as runlog's committer does beside the
// Ship handler): each commit covers a size the writer had reached, and
// once it returns the file holds those bytes as written; the digest at
// the end is that of every byte written, head then tail. Run it with
// -race: the writes behind share the files and the digests.
func TestWriteBehindCommitsWhileWriting(t *testing.T) {
	r := openTestRun(t)
	rng := rand.New(rand.NewPCG(3, 4))
	var head, tail bytes.Buffer
	const headLimit = 3 << 20
	sizes := make(chan [2]int64, 1000)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the committer
		defer wg.Done()
		for {
			var s [2]int64
			select {
			case s = <-sizes:
			case <-done:
				return
			}
			for len(sizes) > 0 { // a group
				s = <-sizes
			}
			if err := r.Commit(State{RunID: "run-1", MaskedBytes: s[0], TailBytes: s[1]}); err != nil {
				t.Error(err)
				return
			}
			logFile, _ := os.ReadFile(filepath.Join(r.dir, logName))
			tailFile, _ := os.ReadFile(filepath.Join(r.dir, tailName(0)))
			if int64(len(logFile)) < s[0] || int64(len(tailFile)) < s[1] {
				t.Errorf("committed %d+%d bytes, files hold %d+%d", s[0], s[1], len(logFile), len(tailFile))
				return
			}
		}
	}()
	for i := range 800 {
		n := 1 + rng.IntN(40<<10)
		if i%97 == 0 {
			n = behindBlock + rng.IntN(behindBlock) // larger than a block
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte('a' + rng.IntN(26))
		}
		if room := headLimit - int64(head.Len()); room > 0 {
			k := min(room, int64(n))
			if _, err := r.Write(p[:k]); err != nil {
				t.Fatal(err)
			}
			head.Write(p[:k])
			p = p[k:]
		}
		if len(p) > 0 {
			if _, err := r.WriteTail(p); err != nil {
				t.Fatal(err)
			}
			tail.Write(p)
		}
		clear(p) // the writer's buffer is reused: the bytes behind were copied
		if i%5 == 0 {
			sizes <- [2]int64{r.Size(), r.TailEnd()}
		}
	}
	close(done)
	wg.Wait()
	if err := r.SyncLog(); err != nil {
		t.Fatal(err)
	}
	logFile, _ := os.ReadFile(filepath.Join(r.dir, logName))
	tailFile, _ := os.ReadFile(filepath.Join(r.dir, tailName(0)))
	if !bytes.Equal(logFile, head.Bytes()) || !bytes.Equal(tailFile, tail.Bytes()) {
		t.Fatalf("files hold %d+%d bytes, not the %d+%d written", len(logFile), len(tailFile), head.Len(), tail.Len())
	}
	got, err := r.StoredSHA256(nil, 0, int64(tail.Len()))
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(head.Bytes(), tail.Bytes()...))
	if got != hex.EncodeToString(want[:]) {
		t.Fatalf("digest %s, want %x", got, want)
	}
	if r.tsum == nil {
		t.Error("the digest was read back, not hashed as written")
	}
}

// A write that fails behind the writer fails the next Write to that file
// and SyncLog (so the commit), until the file is cut back to before it.
func TestWriteBehindErrorFailsCommit(t *testing.T) {
	r := openTestRun(t)
	if _, err := r.Write([]byte("committed\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(State{RunID: "run-1", MaskedBytes: 10}); err != nil {
		t.Fatal(err)
	}
	// The log file's descriptor turns read-only: writes to it fail.
	ro, err := os.Open(filepath.Join(r.dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	rw := r.f
	r.mu.Lock()
	r.f = ro
	r.mu.Unlock()
	if _, err := r.Write(bytes.Repeat([]byte("x"), behindBlock)); err != nil {
		t.Fatalf("a write behind failed before it was written: %v", err)
	}
	if err := r.Commit(State{RunID: "run-1", MaskedBytes: 10 + behindBlock}); err == nil {
		t.Fatal("commit of bytes whose write failed succeeded")
	}
	if st := r.State(); st.MaskedBytes != 10 {
		t.Fatalf("state %d bytes after a failed commit", st.MaskedBytes)
	}
	if _, err := r.Write([]byte("y")); err == nil {
		t.Fatal("Write after a failed write behind succeeded")
	}
	r.mu.Lock()
	r.f = rw
	r.mu.Unlock()
	ro.Close()
	if err := r.Truncate(11); err != nil {
		t.Fatal(err)
	}
	if err := r.SyncLog(); err == nil {
		t.Fatal("the failed write is still in the file, yet SyncLog succeeded")
	}
	if err := r.Truncate(10); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write([]byte("again\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(State{RunID: "run-1", MaskedBytes: 16}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.dir, logName)); string(b) != "committed\nagain\n" {
		t.Fatalf("log file %q", b)
	}
	sum, err := r.SHA256()
	if want := sha256.Sum256([]byte("committed\nagain\n")); err != nil || sum != hex.EncodeToString(want[:]) {
		t.Fatalf("SHA256 = %s, %v", sum, err)
	}
}

// gatedHash is a hash.Hash whose first Write waits until open is closed:
// it holds the goroutine behind on its first block.
type gatedHash struct {
	hash.Hash
	open chan struct{}
}

func (g *gatedHash) Write(p []byte) (int, error) {
	<-g.open
	return g.Hash.Write(p)
}

// While the goroutine behind is held on its first block, a writer can
// queue behindQueue blocks (1 MiB, the first included) and fill one more
// without waiting for it, and no more: the blocks in memory per run are
// bounded (as ADR 0023 states), and a pause of the goroutine behind (a
// slow pwrite, the scheduler) does not stall the writer (the Ship
// handler) before that.
func TestWriteBehindQueueBound(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	synctest.Test(t, func(t *testing.T) {
		var b behind
		b.init(&sync.Pool{})
		gate := &gatedHash{Hash: sha256.New(), open: make(chan struct{})}
		sum := &digest{h: gate}
		var ferr fileErr
		const piece = 32 << 10
		p := bytes.Repeat([]byte("x"), piece)
		write := func(off, n int64) <-chan struct{} {
			done := make(chan struct{})
			go func() {
				defer close(done)
				for end := off + n; off < end; off += piece {
					if err := b.write(f, &ferr, off, p, sum); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			return done
		}
		// 1 MiB queued and a block less a piece being filled.
		const free = 1<<20 + behindBlock - piece
		first := write(0, free)
		synctest.Wait()
		select {
		case <-first:
		default:
			t.Errorf("the writer waited for the goroutine behind before %d bytes were queued", free)
		}
		// The next piece fills the block being filled: queueing it waits.
		next := write(free, piece)
		synctest.Wait()
		select {
		case <-next:
			t.Errorf("the writer queued %d bytes while the goroutine behind held the first block", free+piece)
		default:
		}
		close(gate.open)
		<-first
		<-next
		b.flush()
		if b.done != b.queued || b.err() != nil {
			t.Fatalf("after the flush: %d of %d blocks written, err %v", b.done, b.queued, b.err())
		}
	})
	const written = 1<<20 + behindBlock
	want := sha256.Sum256(bytes.Repeat([]byte("x"), written))
	got, err := os.ReadFile(f.Name())
	if err != nil || sha256.Sum256(got) != want {
		t.Fatalf("the file does not hold the %d bytes written (%d read, err %v)", written, len(got), err)
	}
}
