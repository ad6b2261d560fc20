package ship

import (
	"sync"

	"github.com/hangar-dev/hangar/services/logship/internal/runlog"
)

// groupCommit commits a Ship stream's chunks in groups, the classic way:
// the handler writes each chunk into the spool (Session.Write) and reports
// it here; a goroutine of the stream commits (Session.CommitAck: the
// fsyncs and the state) and sends the Ack as soon as the commit is
// durable, before the tail segment's compaction and the lines written to
// standard output that follow it. A chunk reported while no commit runs
// is committed at once, without waiting for more; the chunks reported
// while a commit runs are committed together by the next one, which
// starts as soon as that commit ends. So a lone chunk (a run's first
// line) is acknowledged, and readable by Tail, one commit after it
// arrived, and under a steady stream the commits follow one another, each
// covering what arrived during the one before: the group grows with the
// disk's latency, never waits on a timer. The handler keeps receiving and
// writing chunks while a commit runs; Close commits the rest itself,
// after stop.
//
// Every chunk reported is followed by a commit started after it: wrote
// leaves a kick (capacity one) that the committer takes before its next
// commit.
type groupCommit struct {
	sess committer
	ack  func(through uint64) error

	kick     chan struct{} // capacity 1: a commit is due
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// failed is closed when a commit or its Ack failed; err says why.
	failed chan struct{}
	err    error
}

// committer is what groupCommit commits: a *runlog.Session. CommitAck
// calls ack once the commit is durable, if it covered new chunks.
type committer interface {
	CommitAck(ack func(through uint64) error) error
}

var _ committer = (*runlog.Session)(nil)

func startGroupCommit(sess committer, ack func(uint64) error) *groupCommit {
	g := &groupCommit{sess: sess, ack: ack, kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{}), failed: make(chan struct{})}
	go g.loop()
	return g
}

// wrote reports a chunk written.
func (g *groupCommit) wrote() {
	select {
	case g.kick <- struct{}{}:
	default: // a commit is due already; it will cover this chunk too
	}
}

func (g *groupCommit) loop() {
	defer close(g.done)
	for {
		select {
		case <-g.kick:
		case <-g.quit:
			return
		}
		if err := g.sess.CommitAck(g.ack); err != nil {
			g.err = err
			close(g.failed)
			return
		}
	}
}

// stop ends the committer, waiting for a commit in progress, and returns
// the error of a failed commit. Chunks written and not committed stay so
// (Close commits them; a reopen rolls them back).
func (g *groupCommit) stop() error {
	g.stopOnce.Do(func() {
		close(g.quit)
		<-g.done
	})
	select {
	case <-g.failed:
		return g.err
	default:
		return nil
	}
}
