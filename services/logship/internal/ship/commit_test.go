package ship

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeCommitter counts commits; a commit blocks while hold is set.
type fakeCommitter struct {
	mu      sync.Mutex
	commits int
	at      []time.Time
	hold    chan struct{} // nil: commits return at once
}

func (f *fakeCommitter) CommitAck(ack func(uint64) error) error {
	f.mu.Lock()
	f.commits++
	f.at = append(f.at, time.Now())
	hold := f.hold
	n := f.commits
	f.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return ack(uint64(n))
}

func (f *fakeCommitter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.commits
}

// A lone chunk is committed (and acknowledged) at once: no time passes
// (the bubble's clock only moves when every goroutine waits), where a
// commit that waited to group more chunks would wait for a timer.
func TestGroupCommitLoneChunkAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeCommitter{}
		acks := make(chan uint64, 10)
		g := startGroupCommit(f, func(n uint64) error { acks <- n; return nil })
		start := time.Now()
		g.wrote()
		synctest.Wait()
		if f.count() != 1 || len(acks) != 1 {
			t.Fatalf("after one chunk and no time: %d commits, %d acks; want 1, 1", f.count(), len(acks))
		}
		if d := f.at[0].Sub(start); d != 0 {
			t.Fatalf("the commit waited %v", d)
		}
		if err := g.stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// The chunks written while a commit runs are committed together by the
// next commit, which starts as soon as that one ends; then nothing more.
func TestGroupCommitGroupsWhileCommitting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		f := &fakeCommitter{hold: hold}
		acks := make(chan uint64, 10)
		g := startGroupCommit(f, func(n uint64) error { acks <- n; return nil })
		g.wrote()
		synctest.Wait()
		if f.count() != 1 {
			t.Fatalf("%d commits started, want 1", f.count())
		}
		for range 5 {
			g.wrote() // while the first commit runs
		}
		synctest.Wait()
		if f.count() != 1 || len(acks) != 0 {
			t.Fatalf("a commit started (%d) or an ack was sent (%d) while one ran", f.count(), len(acks))
		}
		hold <- struct{}{}
		synctest.Wait()
		if f.count() != 2 {
			t.Fatalf("after the first commit: %d commits, want 2 (the five chunks in one)", f.count())
		}
		if a := <-acks; a != 1 {
			t.Fatalf("first ack %d", a)
		}
		close(hold)
		synctest.Wait()
		time.Sleep(time.Hour)
		synctest.Wait()
		if f.count() != 2 || len(acks) != 1 {
			t.Fatalf("%d commits, %d more acks; want 2 commits, 1 ack", f.count(), len(acks))
		}
		if err := g.stop(); err != nil {
			t.Fatal(err)
		}
	})
}
