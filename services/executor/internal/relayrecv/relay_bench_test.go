package relayrecv

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRelay is the output relay alone (ADR 0016): a command printing
// 256 MiB with `yes | head -c`, its output through hangar-relay's pipes,
// buffer and unix socket into the executor's receiver, acknowledged at once
// (no log stream). "direct" is the same command with its output read from a
// plain pipe: the limit of producing the bytes here.
func BenchmarkRelay(b *testing.B) {
	const n = 256 << 20
	script := fmt.Sprintf("yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c %d", n)
	b.Run("relay", func(b *testing.B) {
		b.SetBytes(n)
		cpu0 := cpuTime()
		for b.Loop() {
			sock := filepath.Join(b.TempDir(), "r.sock")
			ln, err := Listen(sock)
			if err != nil {
				b.Fatal(err)
			}
			code := shimFor(sock, script)
			var c counter
			ex, err := ln.Receive(make(chan struct{}), Sink{Stdout: &c, Stderr: &c})
			_ = ln.Close()
			if err != nil || !ex.Reported || ex.Code != 0 || <-code != 0 || c.n != n {
				b.Fatalf("exit %+v, %v, %d bytes", ex, err, c.n)
			}
		}
		// The relay's and the receiver's CPU time (this process; the
		// command's is its children's): the host is shared.
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/n, "cpu-ns/B")
	})
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(n)
		for b.Loop() {
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			p, err := os.StartProcess("/bin/sh", []string{"sh", "-c", script}, &os.ProcAttr{Files: []*os.File{nil, w, os.Stderr}})
			if err != nil {
				b.Fatal(err)
			}
			_ = w.Close()
			var c counter
			_, _ = io.Copy(&c, r)
			_, _ = p.Wait()
			_ = r.Close()
			if c.n != n {
				b.Fatalf("%d bytes", c.n)
			}
		}
	})
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
