package relayrecv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
	return shimMode(sock, script, bufSize, false)
}

// shimMode starts a relay running script, with stderr on a pipe of its own
// when separate is set.
func shimMode(sock, script string, bufSize int, separate bool) <-chan int {
	done := make(chan int, 1)
	go func() {
		s := &relay.Shim{Socket: sock, Buffer: bufSize, SeparateStderr: separate}
		done <- s.Run([]string{"/bin/sh", "-c", script})
	}()
	return done
}

func TestRelayPassesOutputAndExit(t *testing.T) {
	tests := []struct {
		name       string
		separate   bool
		script     string
		wantOut    string
		wantErr    string
		wantCode   int
		wantSignal int
	}{
		// By default stderr is the same pipe as stdout: one stream, in
		// write order (ADR 0020).
		{"exit 0", false, "echo out; echo err >&2; echo out2", "out\nerr\nout2\n", "", 0, 0},
		{"exit 0, separate stderr", true, "echo out; echo err >&2; echo out2", "out\nout2\n", "err\n", 0, 0},
		{"exit 3", false, "echo a; exit 3", "a\n", "", 3, 0},
		{"killed", false, "echo a; kill -9 $$", "a\n", "", 137, 9},
		{"binary output", false, `printf '\000\377x'`, "\x00\xffx", "", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "r.sock")
			ln, err := Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			code := shimMode(sock, tc.script, 0, tc.separate)
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

// TestRelayKeepsWriteOrderOfStdoutAndStderr: by default the command's fd 1
// and fd 2 are one pipe (ADR 0020), so what it writes to the two arrives in
// exactly the order written, partial lines included, all as stdout; with
// SeparateStderr each stream arrives on its own, in its own order. The
// script alternates the two streams a line (and a part of a line) at a time,
// faster than any reader of two pipes can tell their order apart.
func TestRelayKeepsWriteOrderOfStdoutAndStderr(t *testing.T) {
	const rounds = 2000
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo out-$i; echo err-$i >&2; printf 'p-'; printf 'q-' >&2; echo r-$i; i=$((i+1)); done`, rounds)
	var merged, outOnly, errOnly strings.Builder
	for i := range rounds {
		fmt.Fprintf(&merged, "out-%d\nerr-%d\np-q-r-%d\n", i, i, i)
		fmt.Fprintf(&outOnly, "out-%d\np-r-%d\n", i, i)
		fmt.Fprintf(&errOnly, "err-%d\nq-", i)
	}
	// A buffer of 999 bytes wraps around the relay's ring thousands of
	// times, in the middle of lines and of runs of one stream.
	tests := []struct {
		name             string
		separate         bool
		buffer           int
		wantOut, wantErr string
	}{
		{"one pipe (default)", false, 0, merged.String(), ""},
		{"separate stderr", true, 0, outOnly.String(), errOnly.String()},
		{"one pipe, small buffer", false, 999, merged.String(), ""},
		{"separate stderr, small buffer", true, 999, outOnly.String(), errOnly.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "r.sock")
			ln, err := Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			code := shimMode(sock, script, tc.buffer, tc.separate)
			var out, errOut buffer
			ex, err := ln.Receive(make(chan struct{}), Sink{Stdout: &out, Stderr: &errOut})
			if err != nil {
				t.Fatal(err)
			}
			if c := <-code; c != 0 || ex.Code != 0 {
				t.Fatalf("exit codes %d (relay) and %+v, want 0", c, ex)
			}
			if got := out.String(); got != tc.wantOut {
				i := 0
				for i < min(len(got), len(tc.wantOut)) && got[i] == tc.wantOut[i] {
					i++
				}
				t.Errorf("stdout (%d bytes, want %d) differs from byte %d: got %q, want %q",
					len(got), len(tc.wantOut), i, got[i:min(len(got), i+40)], tc.wantOut[i:min(len(tc.wantOut), i+40)])
			}
			if got := errOut.String(); got != tc.wantErr {
				t.Errorf("stderr: %d bytes, want %d (%.80q…)", len(got), len(tc.wantErr), got)
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

// TestResumeAcknowledgesWhatIsStored: a relay that reconnects holding
// output the executor had stored already (its hello: produced 100, kept 0;
// the executor resumes at 100) gets that acknowledged at once, without
// sending anything more: else a relay whose buffer is full of such output
// would wait for ever.
func TestResumeAcknowledgesWhatIsStored(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "r.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gone := make(chan struct{})
	defer close(gone)
	go func() { _, _ = ln.Receive(gone, Sink{Stdout: &buffer{}, Stderr: &buffer{}, Resume: 100}) }()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte(relay.Magic), 100), 0)
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	if from := binary.BigEndian.Uint64(b[:]); from != 100 {
		t.Fatalf("resume from %d, want 100", from)
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("no acknowledgement of the stored output: %v", err)
	}
	if ack := binary.BigEndian.Uint64(b[:]); ack != 100 {
		t.Fatalf("acknowledged %d, want 100", ack)
	}
}

// TestRelayPassesFastOutputWholeAndInOrder: bursts of output written as fast
// as the command can (seq, 4 KiB writes), which the relay lets gather in its
// pipe, separated by pauses, after which it waits for the next write again,
// arrive whole and in order, also when a slow receiver keeps a small relay
// buffer full (the command then blocks; nothing is dropped).
func TestRelayPassesFastOutputWholeAndInOrder(t *testing.T) {
	const bursts, count = 12, 40000
	script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do seq 1 %d; sleep 0.01; i=$((i+1)); done", bursts, count)
	var burst strings.Builder
	for i := 1; i <= count; i++ {
		fmt.Fprintf(&burst, "%d\n", i)
	}
	want := strings.Repeat(burst.String(), bursts)
	tests := []struct {
		name   string
		buffer int
		slow   bool
	}{
		{"default buffer", 0, false},
		{"64 KiB buffer, slow receiver", 64 << 10, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "r.sock")
			ln, err := Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			code := shim(t, sock, script, tc.buffer)
			out := &slowWriter{slow: tc.slow}
			ex, err := ln.Receive(make(chan struct{}), Sink{Stdout: out, Stderr: out})
			if err != nil {
				t.Fatal(err)
			}
			if c := <-code; c != 0 || ex.Code != 0 {
				t.Fatalf("exit codes %d (relay) and %+v, want 0", c, ex)
			}
			if got := out.buf.String(); got != want {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("%d bytes, want %d; they differ from byte %d: %q", len(got), len(want), i, got[i:min(len(got), i+40)])
			}
		})
	}
}

// slowWriter keeps what it is given; when slow, it sleeps 1 ms every 16
// writes, so that the relay's buffer fills.
type slowWriter struct {
	buf    bytes.Buffer
	slow   bool
	writes int
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.slow && w.writes%16 == 0 {
		time.Sleep(time.Millisecond)
	}
	return w.buf.Write(p)
}

// TestRelayPassesALineAfterABurstAtOnce: a line printed right after a burst
// (while the relay lets output gather) reaches the receiver while the command
// waits, printing nothing, for the receiver to have it: the relay holds no
// output back for more output to come. Were it held, the command would wait
// for ever (the test fails after a minute).
func TestRelayPassesALineAfterABurstAtOnce(t *testing.T) {
	dir := t.TempDir()
	sock, seen := filepath.Join(dir, "r.sock"), filepath.Join(dir, "seen")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	script := fmt.Sprintf("seq 1 500000; echo last; while [ ! -e %s ]; do sleep 0.01; done; echo after", seen)
	code := shim(t, sock, script, 0)
	out := &watchWriter{want: "\nlast\n", seen: seen}
	gone := make(chan struct{})
	timeout := time.AfterFunc(time.Minute, func() { close(gone) })
	defer timeout.Stop()
	ex, err := ln.Receive(gone, Sink{Stdout: out, Stderr: out})
	if err != nil || !ex.Reported {
		t.Fatalf("the command did not end (%+v, %v): its last line was not passed on while it waited", ex, err)
	}
	if c := <-code; c != 0 {
		t.Fatalf("relay exit %d", c)
	}
	if !strings.HasSuffix(out.buf.String(), "\n500000\nlast\nafter\n") {
		t.Fatalf("output ends with %q", out.buf.String()[max(0, out.buf.Len()-40):])
	}
}

// watchWriter keeps what it is given and creates the file seen once what it
// holds ends with want.
type watchWriter struct {
	buf  bytes.Buffer
	want string
	seen string
	done bool
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if !w.done && bytes.HasSuffix(w.buf.Bytes(), []byte(w.want)) {
		w.done = true
		if err := os.WriteFile(w.seen, nil, 0o600); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
