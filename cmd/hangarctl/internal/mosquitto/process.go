package mosquitto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binary is where Debian's mosquitto package installs the broker.
const Binary = "/usr/sbin/mosquitto"

// ErrNotInstalled is returned by Start when the mosquitto binary is missing.
var ErrNotInstalled = errors.New("mosquitto is not installed (/usr/sbin/mosquitto or on PATH): apt-get install mosquitto")

// Process is a running mosquitto, for tests and development.
type Process struct {
	cmd  *exec.Cmd
	addr string
	out  *syncBuffer
	done chan struct{}
	err  error // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start runs mosquitto -c confPath and returns once the first listener of the
// configuration accepts TCP connections and mosquitto says it is running. ctx bounds the start-up; the process
// runs until Stop. If mosquitto exits or does not listen, the error includes its
// output.
func Start(ctx context.Context, confPath string) (*Process, error) {
	bin, err := findBinary()
	if err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	addr, err := listenerAddr(confPath)
	if err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	p := &Process{addr: addr, out: new(syncBuffer), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "-c", confPath)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	var accepting time.Time
	for {
		if accepting.IsZero() {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = conn.Close()
				accepting = time.Now()
			}
		}
		// Mosquitto opens its sockets before it loads the certificates, and exits
		// if it cannot: ready is its "running" log line, or, if it logs elsewhere,
		// still alive a moment after the port accepted a connection.
		if !accepting.IsZero() && (strings.Contains(p.out.String(), " running") || time.Since(accepting) > 500*time.Millisecond) {
			select {
			case <-p.done:
			default:
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("start mosquitto: exited (%v) before listening on %s: %s", p.err, addr, p.out.String())
		case <-ctx.Done():
			_ = p.Stop()
			return nil, fmt.Errorf("start mosquitto: %w; output: %s", ctx.Err(), p.out.String())
		case <-timeout.C:
			_ = p.Stop()
			return nil, fmt.Errorf("start mosquitto: not listening on %s after 10s: %s", addr, p.out.String())
		case <-tick.C:
		}
	}
}

// Addr returns the host:port of the process's first listener.
func (p *Process) Addr() string { return p.addr }

// Output returns what mosquitto has logged so far.
func (p *Process) Output() string { return p.out.String() }

// Stop terminates mosquitto (SIGTERM, which saves persistent sessions; SIGKILL
// after 10 s) and waits for it to exit. It may be called more than once.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = fmt.Errorf("stop mosquitto: %w", err)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.stopErr = errors.New("stop mosquitto: killed after 10s")
		}
	})
	return p.stopErr
}

// Kill kills mosquitto with SIGKILL, as a crash would, and waits for it to exit.
func (p *Process) Kill() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

func findBinary() (string, error) {
	if _, err := os.Stat(Binary); err == nil {
		return Binary, nil
	}
	if path, err := exec.LookPath("mosquitto"); err == nil {
		return path, nil
	}
	return "", ErrNotInstalled
}

// listenerAddr returns the address to dial for the first `listener PORT [BIND]`
// line of the configuration at path.
func listenerAddr(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "listener" {
			continue
		}
		port, err := strconv.Atoi(f[1])
		if err != nil {
			return "", fmt.Errorf("%s: bad listener port %q", path, f[1])
		}
		host := "127.0.0.1"
		if len(f) > 2 && f[2] != "0.0.0.0" && f[2] != "::" {
			host = f[2]
		}
		return net.JoinHostPort(host, strconv.Itoa(port)), nil
	}
	return "", fmt.Errorf("%s: no listener line", path)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
