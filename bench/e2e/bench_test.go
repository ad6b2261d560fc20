package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// firstLine is what both sides of BenchmarkFirstOutput print.
const firstLine = "hello"

// BenchmarkFirstOutput compares, fairly, the time to a run's first output
// line and to its end: both sides are measured from starting a process.
// "hangar": `hangarctl run submit --spec F --follow` (sealing, publishing,
// intake, policy, dispatch, the executor's workspace, volume and container,
// the log through logship's Tail, and hangarctl's own start) until "hello" is
// on its stdout, and until it exits (the run finished). "docker-run": `docker
// run --rm IMAGE echo hello` of the same image until "hello" is on its stdout,
// and until it exits. Each iteration is one pair, A/B interleaved (the order
// alternates), so that load on the host weighs on both sides alike; the
// metrics are the median and the spread (min, max) of the per-pair ratios
// hangar/docker, and the medians of each side. Goal: ratio ≤ 1.2.
//
// A third side, "docker-run-hardened", is for reference: `docker run` of the
// same image with the settings the executor gives a run container (its
// network, in a namespace of its own as before network holders (ADR 0024),
// no engine init, the dropped capabilities, no new privileges, a
// PID limit, no log driver, a fresh workspace volume and two bind mounts as
// the relay's; see hardenedFlags): what the container's own start costs with
// Hangar's isolation, without Hangar. Its ratio (hangar/hardened) is
// reported beside the goal's.
//
// With HANGAR_BENCH_BASELINE naming another hangarctl binary (an earlier
// build), a fourth side, "baseline", runs it against a second stack that
// binary starts (`dev` in tmpRoot/dev-baseline): before and after a change
// in the same run, interleaved with the others, ratio baseline/docker.
func BenchmarkFirstOutput(b *testing.B) {
	requireImage(b)
	s := stack(b)
	spec := filepath.Join(tmpRoot, "first-output.json")
	if err := os.WriteFile(spec, []byte(fmt.Sprintf(`{"type": "RUN_TYPE_TASK", "stack": {"id": "bench", "name": "bench"},
  "runner_image": %q, "phases": [{"name": "perform", "commands": ["echo %s"]}]}`, benchImage, firstLine)), 0o600); err != nil {
		b.Fatal(err)
	}
	ctl, err := hangarctl()
	if err != nil {
		b.Fatal(err)
	}
	// hangarctl's own start: from its process start to its "submitted"
	// line (the envelope published), per side.
	var hs, bs []float64
	submit := func(ctl string, s *devStack, submitted *[]float64) (time.Duration, time.Duration) {
		args := []string{"run", "submit", "--dir", s.cpDir, "--pool", s.poolName, "--spec", spec, "--follow", "--logship", s.logship}
		if s.tlsCA != "" {
			args = append(args, "--tls-ca", s.tlsCA, "--tls-cert", s.tlsCert, "--tls-key", s.tlsKey)
		}
		first, exit, sub := firstAndExitMarked(b, exec.Command(ctl, args...), " submitted to pool ")
		*submitted = append(*submitted, ms(sub))
		return first, exit
	}
	hangar := func() (time.Duration, time.Duration) { return submit(ctl, s, &hs) }
	var baseline func() (time.Duration, time.Duration)
	if base := os.Getenv("HANGAR_BENCH_BASELINE"); base != "" {
		bstack := baselineStack(b, base)
		baseline = func() (time.Duration, time.Duration) { return submit(base, bstack, &bs) }
	}
	docker := func() (time.Duration, time.Duration) {
		return firstAndExit(b, exec.Command("docker", "run", "--rm", benchImage, "echo", firstLine))
	}
	flags, err := hardenedFlags()
	if err != nil {
		b.Fatal(err)
	}
	hardened := func() (time.Duration, time.Duration) {
		args := append(append([]string{"run", "--rm"}, flags...), benchImage, "echo", firstLine)
		return firstAndExit(b, exec.Command("docker", args...))
	}
	// Untimed warm-up of every side.
	hangar()
	docker()
	hardened()
	if baseline != nil {
		baseline()
	}
	hs, bs = hs[:0], bs[:0]
	var hf, he, df, de, xf, xe, rf, re, rxf, rxe, bf, be, rbf, rbe []float64
	i := 0
	for b.Loop() {
		var h1, h2, d1, d2, x1, x2, b1, b2 time.Duration
		sides := []func(){
			func() { h1, h2 = hangar() },
			func() { d1, d2 = docker() },
			func() { x1, x2 = hardened() },
		}
		if baseline != nil {
			sides = append(sides, func() { b1, b2 = baseline() })
		}
		// Rotated, and reversed in every other block of len(sides)
		// iterations, so that no side always runs right after the same
		// other one (what one run leaves the engine and the host to do
		// weighs on the next).
		n := len(sides)
		for j := range n {
			k := j
			if (i/n)%2 == 1 {
				k = n - 1 - j
			}
			sides[(i+k)%n]()
		}
		i++
		hf, he, df, de = append(hf, ms(h1)), append(he, ms(h2)), append(df, ms(d1)), append(de, ms(d2))
		xf, xe = append(xf, ms(x1)), append(xe, ms(x2))
		rf, re = append(rf, ms(h1)/ms(d1)), append(re, ms(h2)/ms(d2))
		rxf, rxe = append(rxf, ms(h1)/ms(x1)), append(rxe, ms(h2)/ms(x2))
		if baseline != nil {
			bf, be = append(bf, ms(b1)), append(be, ms(b2))
			rbf, rbe = append(rbf, ms(b1)/ms(d1)), append(rbe, ms(b2)/ms(d2))
		}
	}
	b.ReportMetric(median(hs), "hangar-submitted-ms")
	b.ReportMetric(median(hf), "hangar-first-ms")
	b.ReportMetric(median(df), "docker-first-ms")
	b.ReportMetric(median(he), "hangar-exit-ms")
	b.ReportMetric(median(de), "docker-exit-ms")
	b.ReportMetric(median(rf), "ratio-first-p50")
	b.ReportMetric(slices.Min(rf), "ratio-first-min")
	b.ReportMetric(slices.Max(rf), "ratio-first-max")
	b.ReportMetric(median(re), "ratio-exit-p50")
	b.ReportMetric(slices.Min(re), "ratio-exit-min")
	b.ReportMetric(slices.Max(re), "ratio-exit-max")
	b.ReportMetric(float64(len(rf)), "pairs")
	b.ReportMetric(median(xf), "hardened-first-ms")
	b.ReportMetric(median(xe), "hardened-exit-ms")
	b.ReportMetric(median(rxf), "ratio-hardened-first-p50")
	b.ReportMetric(median(rxe), "ratio-hardened-exit-p50")
	if baseline != nil {
		b.ReportMetric(median(bs), "baseline-submitted-ms")
		b.ReportMetric(median(bf), "baseline-first-ms")
		b.ReportMetric(median(be), "baseline-exit-ms")
		b.ReportMetric(median(rbf), "ratio-baseline-first-p50")
		b.ReportMetric(slices.Min(rbf), "ratio-baseline-first-min")
		b.ReportMetric(slices.Max(rbf), "ratio-baseline-first-max")
		b.ReportMetric(median(rbe), "ratio-baseline-exit-p50")
		b.ReportMetric(slices.Min(rbe), "ratio-baseline-exit-min")
		b.ReportMetric(slices.Max(rbe), "ratio-baseline-exit-max")
	}
}

// hardenedFlags are `docker run` flags that give a container the settings
// the executor gives each run container (dockerrt's phaseContainer and
// hostConfig; the benchmark drives binaries only and repeats them here): the
// stack's run network, no engine init (the executor's relay is the init;
// here echo is PID 1), all capabilities dropped but the
// eight a run keeps, no new privileges, a private IPC namespace, a PID limit,
// no log driver, a fresh anonymous volume at /workspace (removed with the
// container) and two bind mounts where the relay and its socket directory go.
func hardenedFlags() ([]string, error) {
	io := filepath.Join(tmpRoot, "hardened-io")
	if err := os.MkdirAll(io, 0o755); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	flags := []string{"--label", "hangar-bench=first-output", "--network", "hangar-runs",
		"--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--ipc", "private", "--pids-limit", "4096", "--log-driver", "none",
		"--mount", "type=volume,dst=/workspace,volume-nocopy",
		"--mount", "type=bind,src=" + self + ",dst=/.hangar/relay,readonly",
		"--mount", "type=bind,src=" + io + ",dst=/.hangar/io"}
	for _, c := range []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE"} {
		flags = append(flags, "--cap-add", c)
	}
	return flags, nil
}

// firstAndExit starts cmd and returns the time until firstLine is on its
// stdout and until it exits. The benchmark timer is not used: both are
// measured the same way for both sides.
func firstAndExit(b *testing.B, cmd *exec.Cmd) (time.Duration, time.Duration) {
	b.Helper()
	first, exit, _ := firstAndExitMarked(b, cmd, "")
	return first, exit
}

// firstAndExitMarked is firstAndExit, and also returns the time until the
// first line holding mark (if mark is not "": else 0).
func firstAndExitMarked(b *testing.B, cmd *exec.Cmd, mark string) (time.Duration, time.Duration, time.Duration) {
	b.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var first, marked time.Duration
	for sc.Scan() {
		if marked == 0 && mark != "" && strings.Contains(sc.Text(), mark) {
			marked = time.Since(t0)
		}
		if first == 0 && strings.TrimSpace(sc.Text()) == firstLine {
			first = time.Since(t0)
		}
	}
	err = cmd.Wait()
	exit := time.Since(t0)
	if err != nil || first == 0 || (mark != "" && marked == 0) {
		b.Fatalf("%s: first line %q seen: %t, %q seen: %t: %v\n%s", cmd.Args[0], firstLine, first != 0, mark, marked != 0, err, stderr.String())
	}
	return first, exit, marked
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	c := slices.Clone(v)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
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
// log path, for reference). MB/s counts the bytes printed. With
// HANGAR_BENCH_BASELINE naming another hangarctl binary, "baseline" is the
// hangar row of a second stack that binary starts (as in
// BenchmarkFirstOutput): with -count N, before and after alternate.
func BenchmarkLogThroughput(b *testing.B) {
	requireImage(b)
	n := logBytes(b)
	// One row of a stack: the run printing n bytes, after a warm-up.
	stackRow := func(b *testing.B, s *devStack) {
		hangarLog(b, s, 1<<20, nil) // warm-up
		b.SetBytes(n)
		var stored int64
		var cpu, host, ctr time.Duration
		for b.Loop() {
			c, h, r := hangarLog(b, s, n, &stored)
			cpu, host, ctr = cpu+c, host+h, ctr+r
		}
		b.ReportMetric(float64(stored)/(1<<20), "MiB-stored")
		// The stack's CPU time per byte printed does not depend on what
		// else the host runs, as the elapsed time does.
		b.ReportMetric(float64(cpu)/float64(b.N)/float64(n), "stack-cpu-ns/B")
		b.ReportMetric(float64(host)/float64(b.N)/float64(n), "host-cpu-ns/B")
		b.ReportMetric(float64(ctr)/float64(b.N)/float64(n), "container-cpu-ns/B")
	}
	b.Run("hangar", func(b *testing.B) { stackRow(b, stack(b)) })
	// Before and after a change in one run: the same row from the stack of
	// another hangarctl build (HANGAR_BENCH_BASELINE), after this one's.
	if base := os.Getenv("HANGAR_BENCH_BASELINE"); base != "" {
		b.Run("baseline", func(b *testing.B) { stackRow(b, baselineStack(b, base)) })
	}
	b.Run("docker-run", func(b *testing.B) {
		dockerLog(b, 1<<20, false)
		b.SetBytes(n)
		var host, ctr time.Duration
		for b.Loop() {
			h, c := dockerLog(b, n, false)
			host, ctr = host+h, ctr+c
		}
		b.ReportMetric(float64(host)/float64(b.N)/float64(n), "host-cpu-ns/B")
		b.ReportMetric(float64(ctr)/float64(b.N)/float64(n), "container-cpu-ns/B")
		b.ReportMetric(float64(ctr)/float64(b.N)/float64(n), "container-cpu-ns/B")
	})
	b.Run("docker-run-attached", func(b *testing.B) {
		dockerLog(b, 1<<20, true)
		b.SetBytes(n)
		var host, ctr time.Duration
		for b.Loop() {
			h, c := dockerLog(b, n, true)
			host, ctr = host+h, ctr+c
		}
		b.ReportMetric(float64(host)/float64(b.N)/float64(n), "host-cpu-ns/B")
		b.ReportMetric(float64(ctr)/float64(b.N)/float64(n), "container-cpu-ns/B")
		b.ReportMetric(float64(ctr)/float64(b.N)/float64(n), "container-cpu-ns/B")
	})
}

// baselineStack returns the stack of the hangarctl build base
// (HANGAR_BENCH_BASELINE), starting it on first use (`dev` in
// tmpRoot/dev-baseline).
func baselineStack(b *testing.B, base string) *devStack {
	b.Helper()
	if baseStack == nil {
		var err error
		if baseStack, err = startStackWith(base, "dev-baseline"); err != nil {
			b.Fatalf("baseline stack (HANGAR_BENCH_BASELINE=%s): %v", base, err)
		}
	}
	return baseStack
}

// hangarLog runs one run printing n bytes and returns the CPU time the
// stack's process (hangarctl dev: every service, the S3 server) spent
// meanwhile, the busy time of the whole host (hostBusy), and the CPU time of
// the run container (its relay, PID 1, and the command under it).
func hangarLog(b *testing.B, s *devStack, n int64, storedBytes *int64) (time.Duration, time.Duration, time.Duration) {
	b.StopTimer()
	// Untimed setup and cleanup; b.Loop needs the timer running when called.
	defer b.StartTimer()
	r := s.prepare(b, benchImage, printCommand(n))
	defer s.forget(r)
	offset := s.logshipLogSize()
	timeout := 5*time.Minute + time.Duration(n>>20)*time.Second

	cpu0, host0 := procCPU(b, s.cmd.Process.Pid), hostBusy(b)
	ctr := followCPU("/.hangar/relay\x00", fmt.Sprintf("head -c %d", n))
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
	cpu, host := procCPU(b, s.cmd.Process.Pid)-cpu0, hostBusy(b)-host0
	ctrCPU := ctr.cpu()

	// The stored log is the whole output plus Hangar's own lines (phase,
	// result): the stack runs with logship's size limit raised (logMaxBytes).
	if fin.GetLogKey() == "" || stored < min(n, logMaxBytes) {
		b.Fatalf("run %s: final object %q holds %d bytes, the run printed %d", r.id, fin.GetLogKey(), stored, n)
	}
	if storedBytes != nil {
		*storedBytes = stored
	}
	s.dropStoredLog(r.id)
	return cpu, host, ctrCPU
}

// hostBusy is the time all CPUs of the host were busy so far, every process
// (the container's too, and dockerd): the first line of /proc/stat, every
// column but idle and iowait, in clock ticks of 1/100 s. Per byte printed,
// it is what decides the rate on a host the run keeps busy; whatever else
// runs meanwhile is counted too.
func hostBusy(b *testing.B) time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: %q", line)
	}
	var busy int64
	// user nice system idle iowait irq softirq steal
	for i, v := range f[1:9] {
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q", line)
		}
		if i != 3 && i != 4 {
			busy += t
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// procCPU is the user and system CPU time of process pid so far, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s).
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// logMaxBytes is logship's HANGAR_LOG_MAX_BYTES in the benchmark stack: far
// over what the log benchmark prints, so that its whole output is stored.
const logMaxBytes = 4 << 30

// dockerLog runs `docker run` printing n bytes and returns the busy time of
// the host meanwhile (hostBusy) and the CPU time of the container (its sh
// and the command).
func dockerLog(b *testing.B, n int64, attached bool) (time.Duration, time.Duration) {
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

	host0 := hostBusy(b)
	ctr := followCPU("sh\x00-c\x00"+script+"\x00", "")
	b.StartTimer()
	err := cmd.Run()
	b.StopTimer()
	host, ctrCPU := hostBusy(b)-host0, ctr.cpu()
	if err != nil {
		b.Fatalf("docker run: %v\n%s", err, stderr.String())
	}
	if attached && count.n != n {
		b.Fatalf("docker run printed %d bytes, want %d", count.n, n)
	}
	return host, ctrCPU
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
