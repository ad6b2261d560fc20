package harness

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file holds what the fault-injection tests (failover, soak) need on top
// of the rest of the harness: a TCP proxy that can cut a link, and services
// that can be stopped and started again on the same addresses and with the
// same state directories.

// Proxy is a TCP proxy on a loopback port to a target address. Cut closes every
// connection and refuses new ones (accepted and reset at once) until Heal: a
// network partition between the proxy's clients and the target.
type Proxy struct {
	// Addr is the proxy's address (127.0.0.1:PORT), to give the client.
	Addr   string
	target string
	ln     net.Listener

	mu       sync.Mutex
	cut      bool
	closed   bool
	conns    map[net.Conn]struct{}
	accepted int
	refused  int
	wg       sync.WaitGroup
}

// StartProxy listens on a free loopback port and forwards to target. It stops
// in t.Cleanup.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut || p.closed {
			p.refused++
			p.mu.Unlock()
			reset(c)
			continue
		}
		p.accepted++
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if p.cut || p.closed {
		p.mu.Unlock()
		reset(up)
		p.drop(c)
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	var once sync.Once
	done := func() {
		once.Do(func() {
			p.drop(c)
			p.drop(up)
		})
	}
	go func() { _, _ = io.Copy(up, c); done() }()
	_, _ = io.Copy(c, up)
	done()
}

func (p *Proxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	reset(c)
}

// reset closes c with a RST rather than a FIN, as a broken link would show.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Cut closes every connection through the proxy and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for _, c := range conns {
		reset(c)
	}
}

// Heal lets connections through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Stats returns how many connections the proxy forwarded and refused so far.
func (p *Proxy) Stats() (accepted, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.refused
}

// Close stops the proxy and closes every connection. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// EmbeddedBroker is `hangarctl broker --data DIR` on a fixed loopback address,
// which can be stopped and started again on the same address and data
// directory (its persistent sessions survive).
type EmbeddedBroker struct {
	Addr    string // 127.0.0.1:PORT
	URL     string // mqtts://127.0.0.1:PORT
	DataDir string
	Service *Service
}

// StartEmbeddedBrokerData runs `hangarctl broker --data DIR` on a free
// loopback port with a fresh data directory.
func (cp *ControlPlane) StartEmbeddedBrokerData(t testing.TB) *EmbeddedBroker {
	t.Helper()
	b := &EmbeddedBroker{Addr: FreeAddr(t), DataDir: filepath.Join(t.TempDir(), "broker-data")}
	b.URL = "mqtts://" + b.Addr
	b.Service = &Service{Name: "broker", Bin: cp.Ctl}
	b.Service.Args = []string{"broker", "--dir", cp.Dir, "--listen", b.Addr, "--data", b.DataDir}
	b.Start(t)
	return b
}

// Start starts the broker (again) on its address and data directory and waits
// until it accepts connections.
func (b *EmbeddedBroker) Start(t testing.TB) {
	t.Helper()
	p := b.Service.Start(t)
	url := p.WaitOutput(brokerListening, time.Minute)
	if url != b.URL {
		t.Fatalf("broker says it listens on %s, asked for %s", url, b.URL)
	}
	p.WaitTCP(b.Addr, time.Minute)
}

// Stop stops the broker as an operator would (SIGTERM; SIGKILL after 15s) and
// waits until it exited.
func (b *EmbeddedBroker) Stop() {
	if p := b.Service.Current(); p != nil {
		p.Stop()
	}
}

// Process is the broker's current process.
func (b *EmbeddedBroker) Process() *Process { return b.Service.Current() }

// Terminate sends SIGTERM once and waits up to timeout for the process to exit;
// it reports whether it did. (Stop escalates to SIGKILL; this does not.)
func (p *Process) Terminate(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Put stores an object straight into the S3 server's backend (to tamper with
// what a service stored).
func (s *S3) Put(t testing.TB, key string, body []byte, meta map[string]string) {
	t.Helper()
	if meta == nil {
		meta = map[string]string{}
	}
	if _, err := s.backend.PutObject(context.Background(), s.Bucket, key, meta, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatalf("s3: put %s: %v", key, err)
	}
}

// CountMatches counts the lines of the process's output matching re.
func (p *Process) CountMatches(re *regexp.Regexp) int {
	return len(re.FindAllStringIndex(p.Output(), -1))
}

func itoa(n int) string {
	const digits = "0123456789"
	if n < 10 {
		return digits[n : n+1]
	}
	return itoa(n/10) + digits[n%10:n%10+1]
}
