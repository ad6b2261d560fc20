package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// firstLine is what both sides of BenchmarkFirstOutput print.
const firstLine = "hello"

// BenchmarkFirstOutput is the time from submitting a run to its first output
// line. "hangar": from publishing the envelope to the broker (sealing it is
// the control plane's work and is done before; hangarctl's process start is
// not involved: the benchmark is the control-plane client) until the line
// arrives through logship's Tail: intake, policy, dispatch, the executor's
// workspace, volume and container, the log stream. "docker-run": `docker run
// --rm IMAGE echo hello` of the same image, from starting the CLI until the
// line is on its stdout: the physical limit of starting a container on this
// host. The goal is that Hangar adds under 20%.
//
// Each sub-benchmark runs one untimed warm-up first; runs are sequential.
func BenchmarkFirstOutput(b *testing.B) {
	requireImage(b)
	b.Run("hangar", func(b *testing.B) {
		s := stack(b)
		hangarFirstOutput(b, s, nil) // warm-up: the Tail connection, the image's pages
		var toStarted time.Duration
		for b.Loop() {
			hangarFirstOutput(b, s, &toStarted)
		}
		b.ReportMetric(float64(toStarted.Milliseconds())/float64(b.N), "ms-to-started/op")
	})
	b.Run("docker-run", func(b *testing.B) {
		dockerFirstOutput(b) // warm-up
		for b.Loop() {
			dockerFirstOutput(b)
		}
	})
}

func hangarFirstOutput(b *testing.B, s *devStack, toStarted *time.Duration) {
	b.StopTimer()
	// Untimed setup and cleanup; b.Loop needs the timer running when called.
	defer b.StartTimer()
	r := s.prepare(b, benchImage, "echo "+firstLine)
	defer s.forget(r)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	b.StartTimer()
	t0 := time.Now()
	if err := s.publish(r); err != nil {
		b.Fatal(err)
	}
	if _, err := r.wait(2*time.Minute, "started event", isStarted); err != nil {
		b.Fatal(err)
	}
	started := time.Since(t0)
	if err := s.tailUntilLine(ctx, r.id, firstLine); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()

	if toStarted != nil {
		*toStarted += started
	}
	// The next run starts on an idle stack.
	if _, err := r.finished(2 * time.Minute); err != nil {
		b.Fatal(err)
	}
}

func dockerFirstOutput(b *testing.B) {
	b.StopTimer()
	// Untimed setup and cleanup; b.Loop needs the timer running when called.
	defer b.StartTimer()
	cmd := exec.Command("docker", "run", "--rm", benchImage, "echo", firstLine)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr

	b.StartTimer()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	found := false
	for !found && sc.Scan() {
		found = sc.Text() == firstLine
	}
	b.StopTimer()

	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil || !found {
		b.Fatalf("docker run: found %q: %v; %t\n%s", firstLine, found, err, stderr.String())
	}
}

// logLine is the line the log benchmarks print over and over: 64 bytes with
// its newline.
const logLine = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"

// logBytes is how much the log benchmarks print: $HANGAR_BENCH_LOG_BYTES, else
// 1 GiB, or 64 MiB with -short.
func logBytes(b *testing.B) int64 {
	if v := os.Getenv("HANGAR_BENCH_LOG_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("HANGAR_BENCH_LOG_BYTES=%q is not a positive number of bytes", v)
		}
		return n
	}
	if testing.Short() {
		return 64 << 20
	}
	return 1 << 30
}

func printCommand(n int64) string { return fmt.Sprintf("yes %s | head -c %d", logLine, n) }

// BenchmarkLogThroughput is a run printing HANGAR_BENCH_LOG_BYTES (default
// 1 GiB) to stdout. "hangar": from publishing the envelope until the run's
// finished event and logship saying the final S3 object is uploaded (the
// container's output through the executor, logship's masker and spool, live
// chunk objects, and the final object). "docker-run": `docker run --rm IMAGE
// sh -c '... > /dev/null'`, the same command with its output thrown away in
// the container: the physical limit. "docker-run-attached": the same without
// the redirection, its output read from the docker CLI's stdout (Docker's own
// log path, for reference). MB/s counts the bytes printed.
func BenchmarkLogThroughput(b *testing.B) {
	requireImage(b)
	n := logBytes(b)
	b.Run("hangar", func(b *testing.B) {
		s := stack(b)
		hangarLog(b, s, 1<<20, nil) // warm-up
		b.SetBytes(n)
		var stored int64
		for b.Loop() {
			hangarLog(b, s, n, &stored)
		}
		b.ReportMetric(float64(stored)/(1<<20), "MiB-stored")
	})
	b.Run("docker-run", func(b *testing.B) {
		dockerLog(b, 1<<20, false)
		b.SetBytes(n)
		for b.Loop() {
			dockerLog(b, n, false)
		}
	})
	b.Run("docker-run-attached", func(b *testing.B) {
		dockerLog(b, 1<<20, true)
		b.SetBytes(n)
		for b.Loop() {
			dockerLog(b, n, true)
		}
	})
}

func hangarLog(b *testing.B, s *devStack, n int64, storedBytes *int64) {
	b.StopTimer()
	// Untimed setup and cleanup; b.Loop needs the timer running when called.
	defer b.StartTimer()
	r := s.prepare(b, benchImage, printCommand(n))
	defer s.forget(r)
	offset := s.logshipLogSize()
	timeout := 5*time.Minute + time.Duration(n>>20)*time.Second

	b.StartTimer()
	if err := s.publish(r); err != nil {
		b.Fatal(err)
	}
	fin, err := r.finished(timeout)
	if err != nil {
		b.Fatal(err)
	}
	stored, err := s.logshipUploaded(r.id, offset, timeout)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()

	// The stored log is the output plus Hangar's own lines (phase, result), or
	// its head and tail when the output is over logship's HANGAR_LOG_MAX_BYTES
	// (64 MiB by default; hangarctl dev does not set it): every byte went
	// through the executor and logship's masker either way.
	if fin.GetLogKey() == "" || stored < min(n, minLogMaxBytes) {
		b.Fatalf("run %s: final object %q holds %d bytes, the run printed %d", r.id, fin.GetLogKey(), stored, n)
	}
	if storedBytes != nil {
		*storedBytes = stored
	}
	s.dropStoredLog(r.id)
}

// minLogMaxBytes is the least logship's HANGAR_LOG_MAX_BYTES can be: a stored
// log holds at least this much of a longer output.
const minLogMaxBytes = 64 << 10

func dockerLog(b *testing.B, n int64, attached bool) {
	b.StopTimer()
	// Untimed setup and cleanup; b.Loop needs the timer running when called.
	defer b.StartTimer()
	script := printCommand(n)
	if !attached {
		script += " > /dev/null"
	}
	cmd := exec.Command("docker", "run", "--rm", benchImage, "sh", "-c", script)
	var count countingWriter
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &count, &stderr

	b.StartTimer()
	err := cmd.Run()
	b.StopTimer()
	if err != nil {
		b.Fatalf("docker run: %v\n%s", err, stderr.String())
	}
	if attached && count.n != n {
		b.Fatalf("docker run printed %d bytes, want %d", count.n, n)
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func requireImage(b *testing.B) {
	b.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		b.Skip("docker CLI not installed")
	}
	if err := imageOnce(); err != nil {
		b.Fatalf("bench image: %v", err)
	}
}
