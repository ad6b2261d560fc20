package ship

import (
	"sync"
	"time"

	"github.com/hangar-dev/hangar/services/logship/internal/runlog"
)

// groupCommit commits a Ship stream's chunks in groups: the handler writes
// each chunk into the spool (Session.Write) and reports it here; a
// goroutine of the stream commits (Session.Commit: fsyncs and the state)
// and sends the Ack once bytes were written since the last commit, or
// delay after the first chunk written since then, whichever comes first.
// The handler keeps receiving and writing chunks while a commit runs;
// Close commits the rest itself, after stop.
//
// Every chunk reported is followed by a commit started after it: either
// wrote signals the committer, or a timer armed by it (or one already
// armed) will.
type groupCommit struct {
	sess  *runlog.Session
	ack   func(through uint64) error
	bytes int64
	delay time.Duration

	mu      sync.Mutex
	written int64 // bytes reported since the committer was last signalled
	armed   bool  // timer set and not yet fired
	timer   *time.Timer

	kick     chan struct{} // capacity 1: a commit is due
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// failed is closed when a commit or its Ack failed; err says why.
	failed chan struct{}
	err    error
}

func startGroupCommit(sess *runlog.Session, bytes int64, delay time.Duration, ack func(uint64) error) *groupCommit {
	g := &groupCommit{sess: sess, ack: ack, bytes: bytes, delay: delay, kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{}), failed: make(chan struct{})}
	g.timer = time.AfterFunc(time.Hour, g.fire)
	g.timer.Stop()
	go g.loop()
	return g
}

// wrote reports a chunk of n bytes written.
func (g *groupCommit) wrote(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.written += int64(n)
	if g.written >= g.bytes {
		g.written = 0
		if g.armed {
			g.timer.Stop()
			g.armed = false
		}
		g.signal()
		return
	}
	if !g.armed {
		g.armed = true
		g.timer.Reset(g.delay)
	}
}

// fire is the timer's: the oldest chunk not committed has waited delay.
func (g *groupCommit) fire() {
	g.mu.Lock()
	g.written, g.armed = 0, false
	g.mu.Unlock()
	g.signal()
}

func (g *groupCommit) signal() {
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
		through, send, err := g.sess.Commit()
		if err == nil && send {
			err = g.ack(through)
		}
		if err != nil {
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
		g.mu.Lock()
		g.timer.Stop()
		g.armed = false
		g.mu.Unlock()
	})
	select {
	case <-g.failed:
		return g.err
	default:
		return nil
	}
}
