// Package relayrecv is the executor's side of the output relay (package relay,
// ADR 0016): it listens on the unix socket a run container's relay connects
// to, passes the output on, and acknowledges it to the relay only once it is
// durable, so that a relay keeps what a dead executor had not stored. A new
// executor process listens on the same path and names the offset to resend
// from.
package relayrecv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hangar-dev/hangar/services/executor/internal/relay"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// Listener is one phase's socket.
type Listener struct {
	ln   *net.UnixListener
	path string
}

// Listen listens on path, replacing a socket an earlier executor process left
// there. The socket is made connectable by any user of the container (it
// sits in a directory only this run's containers see).
func Listen(path string) (*Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("relay socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("relay socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o666); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("relay socket: %w", err)
	}
	return &Listener{ln: ln, path: path}, nil
}

// Close stops listening and removes the socket.
func (l *Listener) Close() error { return l.ln.Close() }

// Sink is where a phase's output goes.
type Sink struct {
	Stdout, Stderr io.Writer
	// Durable, when set, is the job's count of durable output bytes; Base
	// is the job's count before this phase. Without Durable, output is
	// acknowledged once written.
	Durable *runner.Durable
	Base    uint64
	// Resume is the phase's offset the output continues from: 0, or, for a
	// re-adopted phase, what an earlier executor process had stored.
	Resume uint64
}

// Exit is what the relay reported.
type Exit struct {
	// Reported: the relay sent the command's exit (and it was acknowledged).
	Reported     bool
	Code, Signal int
}

// ErrLost: the relay no longer holds output that was never stored.
var ErrLost = errors.New("output of the phase was lost")

// Receive serves relay connections until the relay's exit is acknowledged,
// or gone is closed (the container is gone; what is buffered is over). A
// connection that breaks is accepted again.
func (l *Listener) Receive(gone <-chan struct{}, sink Sink) (Exit, error) {
	received := sink.Resume
	stopAccept := make(chan struct{})
	defer close(stopAccept)
	go func() {
		select {
		case <-gone:
			_ = l.ln.SetDeadline(time.Now())
		case <-stopAccept:
		}
	}()
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			select {
			case <-gone:
				return Exit{}, nil
			default:
			}
			return Exit{}, fmt.Errorf("relay socket: accept: %w", err)
		}
		ex, n, err := serve(c, gone, sink, received)
		received = n
		if err != nil && errors.Is(err, ErrLost) {
			return Exit{}, err
		}
		if ex.Reported {
			return ex, nil
		}
	}
}

// serve runs one connection; it returns the offset received through.
func serve(c *net.UnixConn, gone <-chan struct{}, sink Sink, from uint64) (Exit, uint64, error) {
	var closeOnce sync.Once
	closeConn := func() { closeOnce.Do(func() { _ = c.Close() }) }
	defer closeConn()
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go func() {
		select {
		case <-gone:
			closeConn()
		case <-stopWatch:
		}
	}()

	hello := make([]byte, relay.HelloSize)
	if _, err := io.ReadFull(c, hello); err != nil {
		return Exit{}, from, fmt.Errorf("relay hello: %w", err)
	}
	if string(hello[:4]) != relay.Magic {
		return Exit{}, from, errors.New("relay hello: bad magic")
	}
	produced, kept := binary.BigEndian.Uint64(hello[4:]), binary.BigEndian.Uint64(hello[12:])
	if from < kept || from > produced {
		return Exit{}, from, fmt.Errorf("%w: stored through %d, the relay holds [%d, %d)", ErrLost, from, kept, produced)
	}
	if _, err := c.Write(binary.BigEndian.AppendUint64(nil, from)); err != nil {
		return Exit{}, from, fmt.Errorf("relay: %w", err)
	}

	var received atomic.Uint64
	received.Store(from)
	exitSeen := make(chan struct{})
	quit := make(chan struct{})
	ackDone := make(chan error, 1)
	go func() { ackDone <- acknowledge(c, sink, &received, kept, exitSeen, quit, gone) }()
	var quitOnce sync.Once
	fail := func(err error) (Exit, uint64, error) {
		closeConn()
		quitOnce.Do(func() { close(quit) })
		<-ackDone
		return Exit{}, received.Load(), err
	}

	var ex Exit
	hdr := make([]byte, 5)
	buf := make([]byte, relay.MaxFrame)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return fail(fmt.Errorf("relay: %w", err))
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > relay.MaxFrame {
			return fail(fmt.Errorf("relay: frame of %d bytes", n))
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return fail(fmt.Errorf("relay: %w", err))
		}
		switch hdr[0] {
		case relay.KindStdout, relay.KindStderr:
			w := sink.Stdout
			if hdr[0] == relay.KindStderr {
				w = sink.Stderr
			}
			// A blocking writer blocks the relay, then the command.
			_, _ = w.Write(buf[:n])
			received.Add(uint64(n))
		case relay.KindExit:
			if n < 8 {
				return fail(errors.New("relay: short exit frame"))
			}
			ex = Exit{Code: int(int32(binary.BigEndian.Uint32(buf))), Signal: int(int32(binary.BigEndian.Uint32(buf[4:])))}
			close(exitSeen)
			if err := <-ackDone; err != nil {
				return Exit{}, received.Load(), err
			}
			ex.Reported = true
			return ex, received.Load(), nil
		default:
			return fail(fmt.Errorf("relay: unknown frame kind %d", hdr[0]))
		}
	}
}

// acknowledge sends the durable offset whenever it grows past what the relay
// holds as acknowledged (kept, from its hello), and Done once the exit was
// seen and everything is durable. It starts from kept, not from what was
// received when it started: frames received before it ran (it is a
// goroutine) are acknowledged too, and so is a resume offset above kept, or
// a relay whose buffer is full of them would wait for ever.
func acknowledge(c *net.UnixConn, sink Sink, received *atomic.Uint64, kept uint64, exitSeen, quit, gone <-chan struct{}) error {
	acked := kept
	exited := false
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var changed <-chan struct{}
		durable := received.Load()
		if sink.Durable != nil {
			var abs uint64
			abs, changed = sink.Durable.Get()
			durable = min(durable, max(abs, sink.Base)-sink.Base)
		}
		if !exited {
			select {
			case <-exitSeen:
				exited = true
			default:
			}
		}
		if durable > acked {
			if _, err := c.Write(binary.BigEndian.AppendUint64(nil, durable)); err != nil {
				return fmt.Errorf("relay: ack: %w", err)
			}
			acked = durable
		}
		if exited && acked == received.Load() {
			if _, err := c.Write(binary.BigEndian.AppendUint64(nil, relay.Done)); err != nil {
				return fmt.Errorf("relay: ack: %w", err)
			}
			return nil
		}
		// Durable changes are signalled; received ones are polled (cheap,
		// and only while output flows or the exit waits).
		select {
		case <-changed:
		case <-exitSeen:
			exited, exitSeen = true, nil
		case <-tick.C:
		case <-quit:
			return errors.New("relay: connection closed")
		case <-gone:
			return errors.New("relay: the container is gone")
		}
	}
}
