package relayrecv

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
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

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
