package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Result is the outcome of a command run to completion.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// String shows the result for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit code %d\n--- stdout:\n%s--- stderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Run runs bin with args and extra environment (KEY=VALUE) until it exits or
// timeout passes (then it is killed and the test fails). A non-zero exit is not a
// failure: the caller checks Code.
func Run(t testing.TB, timeout time.Duration, env []string, bin string, args ...string) Result {
	t.Helper()
	return RunIn(t, "", timeout, env, bin, args...)
}

// RunIn is Run in the working directory dir ("" for the test's).
func RunIn(t testing.TB, dir string, timeout time.Duration, env []string, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: still running after %s, killed\n%s", filepath.Base(bin), strings.Join(args, " "), timeout, res)
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return res
}

// Process is a long-running binary started by Start. Its stdout and stderr go to
// a file (the tail is logged if the test fails) and to memory, for WaitOutput.
type Process struct {
	Name    string
	LogPath string

	t    testing.TB
	cmd  *exec.Cmd
	out  *syncBuffer
	file *os.File
	done chan struct{}
	err  error // valid once done is closed

	stopOnce sync.Once
}

// Start starts bin with args and extra environment. The process is stopped
// (SIGTERM, then SIGKILL) in t.Cleanup, and its output's tail is logged if the
// test failed.
func Start(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: name, LogPath: f.Name(), t: t, out: &syncBuffer{}, file: f, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	w := io.MultiWriter(f, p.out)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- last output of %s (%s):\n%s", name, p.LogPath, tail(p.out.String(), 60))
		}
		f.Close()
	})
	return p
}

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitCode is the exit code once Done is closed (-1 if killed by a signal).
func (p *Process) ExitCode() int {
	<-p.done
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM, waits up to 15s, then SIGKILL. It is idempotent.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.t.Logf("%s did not stop within 15s of SIGTERM: killing it", p.Name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

// WaitExit waits up to timeout for the process to exit by itself and returns its
// exit code; the test fails if it does not.
func (p *Process) WaitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %s\n%s", p.Name, timeout, tail(p.Output(), 40))
		return 0
	}
}

// WaitOutput waits up to timeout for the output to match re and returns the
// first submatch (or the whole match). The test fails if the process exits
// first or the time passes.
func (p *Process) WaitOutput(re *regexp.Regexp, timeout time.Duration) string {
	p.t.Helper()
	var got string
	p.waitFor(timeout, "output matching "+re.String(), func() bool {
		m := re.FindStringSubmatch(p.Output())
		if m == nil {
			return false
		}
		got = m[len(m)-1]
		return true
	})
	return got
}

// WaitTCP waits until addr accepts TCP connections.
func (p *Process) WaitTCP(addr string, timeout time.Duration) {
	p.t.Helper()
	p.waitFor(timeout, "TCP "+addr+" accepting", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// WaitHTTP200 waits until GET url answers 200 (e.g. a debug port's /readyz).
func (p *Process) WaitHTTP200(url string, timeout time.Duration) {
	p.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	p.waitFor(timeout, "GET "+url+" = 200", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
}

func (p *Process) waitFor(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		select {
		case <-p.done:
			if cond() {
				return
			}
			p.t.Fatalf("%s exited (code %d) while waiting for %s\n%s", p.Name, p.ExitCode(), what, tail(p.Output(), 60))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no %s after %s\n%s", p.Name, what, timeout, tail(p.Output(), 60))
		}
	}
}

// FreeAddr returns 127.0.0.1:PORT with a port that was free a moment ago,
// for a process the test starts next to listen on.
//
// The port is not one the kernel gave to a listener on port 0: those come
// from the ephemeral range (ip_local_port_range, 32768-60999 by default),
// from which the kernel also takes the source port of every outgoing
// connection, so that between this check and the process's bind another
// connection of the test (HTTP, gRPC, the Docker API) could take it
// ("address already in use", seen in CI). Ports are drawn instead from
// freePorts (below the ephemeral range, above the Kubernetes components'
// 10250-10259 and under its NodePorts), checked free by a bind, and never
// handed out twice by this test process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 1000 {
		port := freePorts.next()
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // in use by someone else: draw another
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		return addr
	}
	t.Fatal("FreeAddr: no free port found in 1000 tries")
	return ""
}

// portPool hands out ports of [lo, hi) in a random order, each once per
// process.
type portPool struct {
	mu     sync.Mutex
	lo, hi int
	used   map[int]bool
}

// freePorts is the test process's pool of FreeAddr: one per process, so
// that no two tests of it, parallel or not, get the same port.
var freePorts = &portPool{lo: 20000, hi: 30000, used: map[int]bool{}}

func (p *portPool) next() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.used) >= p.hi-p.lo {
		clear(p.used) // all handed out: the earliest are long closed
	}
	for {
		port := p.lo + rand.IntN(p.hi-p.lo)
		if !p.used[port] {
			p.used[port] = true
			return port
		}
	}
}

// Port returns the port of a host:port address.
func Port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = append([]string{fmt.Sprintf("[... %d lines before]", len(parts)-lines)}, parts[len(parts)-lines:]...)
	}
	return strings.Join(parts, "\n") + "\n"
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
