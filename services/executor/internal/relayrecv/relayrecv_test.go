package relayrecv

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hangar-dev/hangar/services/executor/internal/relay"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

type buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// shim starts a relay running script and returns its exit code channel.
func shim(t *testing.T, sock, script string, bufSize int) <-chan int {
	t.Helper()
	return shimBuf(sock, script, bufSize)
}

func shimFor(sock, script string) <-chan int { return shimBuf(sock, script, 0) }

func shimBuf(sock, script string, bufSize int) <-chan int {
	done := make(chan int, 1)
	go func() {
		s := &relay.Shim{Socket: sock, Buffer: bufSize}
		done <- s.Run([]string{"/bin/sh", "-c", script})
	}()
	return done
}

func TestRelayPassesOutputAndExit(t *testing.T) {
	tests := []struct {
		name       string
		script     string
		wantOut    string
		wantErr    string
		wantCode   int
		wantSignal int
	}{
		{"exit 0", "echo out; echo err >&2; echo out2", "out\nout2\n", "err\n", 0, 0},
		{"exit 3", "echo a; exit 3", "a\n", "", 3, 0},
		{"killed", "echo a; kill -9 $$", "a\n", "", 137, 9},
		{"binary output", `printf '\000\377x'`, "\x00\xffx", "", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "r.sock")
			ln, err := Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			code := shim(t, sock, tc.script, 0)
			var out, errOut buffer
			ex, err := ln.Receive(make(chan struct{}), Sink{Stdout: &out, Stderr: &errOut})
			if err != nil {
				t.Fatal(err)
			}
			if !ex.Reported || ex.Code != tc.wantCode || ex.Signal != tc.wantSignal {
				t.Errorf("exit = %+v, want code %d signal %d", ex, tc.wantCode, tc.wantSignal)
			}
			if c := <-code; c != tc.wantCode {
				t.Errorf("relay exit code %d, want %d", c, tc.wantCode)
			}
			if out.String() != tc.wantOut || errOut.String() != tc.wantErr {
				t.Errorf("stdout %q stderr %q, want %q %q", out.String(), errOut.String(), tc.wantOut, tc.wantErr)
			}
		})
	}
}

// TestRelayKeepsOutputAcrossExecutorRestarts: the receiving side goes away
// several times in the middle of a run (its listener and connection closed, as
// when the executor process dies) with part of what it received not durable;
// a new listener on the same path resumes from the durable offset. The
// output, cut at each durable offset and joined, is the command's output,
// every line once, in order; meanwhile the command blocked on the relay's
// small buffer rather than losing anything.
func TestRelayKeepsOutputAcrossExecutorRestarts(t *testing.T) {
	const lines = 200000 // far more than the five interrupted lives receive
	sock := filepath.Join(t.TempDir(), "r.sock")
	code := shim(t, sock, fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo line $i; i=$((i+1)); done", lines), 256<<10)
	var stored bytes.Buffer
	var resume uint64
	for life := 0; ; life++ {
		ln, err := Listen(sock)
		if err != nil {
			t.Fatal(err)
		}
		// Durable counts the job's bytes, as the executor's log stream does.
		durable := runner.NewDurable(resume)
		out := &limitWriter{stopAfter: 100 << 10, durable: durable, base: resume}
		gone := make(chan struct{})
		out.gone = gone
		if life >= 5 {
			// The last life runs to the end, everything durable.
			out.stopAfter, out.keepEvery = 1<<62, 1
		}
		ex, err := ln.Receive(gone, Sink{Stdout: out, Stderr: out, Durable: durable, Resume: resume})
		_ = ln.Close()
		if err != nil {
			t.Fatalf("life %d: %v", life, err)
		}
		// What this life made durable is stored; the rest is lost with it.
		d, _ := durable.Get()
		stored.Write(out.bytes()[:d-resume])
		resume = d
		if ex.Reported {
			if ex.Code != 0 {
				t.Fatalf("exit %+v", ex)
			}
			break
		}
	}
	if c := <-code; c != 0 {
		t.Fatalf("relay exit %d", c)
	}
	got := strings.Split(strings.TrimSuffix(stored.String(), "\n"), "\n")
	if len(got) != lines {
		t.Fatalf("%d lines stored, want %d", len(got), lines)
	}
	for i, l := range got {
		if l != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d = %q", i, l)
		}
	}
}

// limitWriter keeps what it is given, marks part of it durable, and ends its
// "executor life" (closes gone) after stopAfter bytes.
type limitWriter struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	stopAfter int
	keepEvery int
	base      uint64
	durable   *runner.Durable
	gone      chan struct{}
	closed    bool
}

func (w *limitWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.durable.Set(w.base + uint64(w.buf.Len()))
	w.buf.Write(p)
	if w.keepEvery == 1 {
		w.durable.Set(w.base + uint64(w.buf.Len()))
	}
	if w.buf.Len() >= w.stopAfter && !w.closed {
		w.closed = true
		close(w.gone)
	}
	return len(p), nil
}

func (w *limitWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.buf.Bytes()...)
}
