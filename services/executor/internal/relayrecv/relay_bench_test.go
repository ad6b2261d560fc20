package relayrecv

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRelay is the output relay alone (ADR 0016): a command printing
// 256 MiB with `yes | head -c`, its output through hangar-relay's pipes,
// buffer and unix socket into the executor's receiver, acknowledged at once
// (no log stream). "direct" is the same command with its output read from a
// plain pipe: the limit of producing the bytes here. With busybox on the
// host, yes and head are busybox's, as in the end-to-end benchmark's image
// (busybox's head writes 4 KiB at a time); else the host's.
func BenchmarkRelay(b *testing.B) {
	const n = 256 << 20
	tool := ""
	if _, err := exec.LookPath("busybox"); err == nil {
		tool = "busybox "
	}
	script := fmt.Sprintf("%syes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | %shead -c %d", tool, tool, n)
	b.Run("relay", func(b *testing.B) {
		b.SetBytes(n)
		cpu0, cmd0, host0 := cpuTime(), childrenCPUTime(), hostBusy(b)
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
		reportCommand(b, n, cmd0, host0)
	})
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(n)
		cmd0, host0 := childrenCPUTime(), hostBusy(b)
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
		reportCommand(b, n, cmd0, host0)
	})
}

// reportCommand reports the command's CPU time per byte (yes, head and
// their shell: what the relay's pipe costs the writer) and the whole host's
// (every process: what decides the rate on a busy host).
func reportCommand(b *testing.B, n int64, cmd0, host0 time.Duration) {
	b.ReportMetric(float64(childrenCPUTime()-cmd0)/float64(b.N)/float64(n), "cmd-cpu-ns/B")
	b.ReportMetric(float64(hostBusy(b)-host0)/float64(b.N)/float64(n), "host-cpu-ns/B")
}

// childrenCPUTime is the user and system CPU time of this process's waited-for
// children (the commands) so far.
func childrenCPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostBusy is the time all CPUs of the host were busy so far (/proc/stat:
// every column but idle and iowait, in clock ticks of 1/100 s).
func hostBusy(b *testing.B) time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: %q", line)
	}
	var busy int64
	for i, v := range f[1:min(len(f), 9)] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q", line)
		}
		busy += t
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
