package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// durRunnerImage is the run image: the host's static busybox (as
// TestExecution's).
const durRunnerImage = "hangar-e2e/busybox:latest"

// durSecret is the secret variable S of the durability runs: every line they
// print holds it.
const durSecret = "dur-Zk4Qm9Tx-w7Lp-hunter2"

// durMask replaces a secret in the stored log (logship's default mask).
const durMask = "******"

// durWait bounds each wait for something that should happen: generous, so
// that a slow machine does not fail the test.
const durWait = 90 * time.Second

// Line numbers at which the durability run's output changes (see durEnv.submit).
const (
	durBatchA = 1000 // lines [0, 1000): before the first gate
	durBatchB = 3000 // lines [1000, 3000): after the first gate, paced
	durBatchC = 4000 // lines [3000, 4000): after the second gate
	durBatchD = 4500 // lines [4000, 4500): the second phase
)

// durEnv is the stack TestLogDurability's subtests share: the embedded
// broker, the policy service (no policy), one gateway (pool-dur), logship
// writing to a restartable S3-compatible server, and one executor with the
// Docker runtime.
type durEnv struct {
	cp       *harness.ControlPlane
	s3       *harness.S3
	obs      *harness.Observer
	logship  *harness.Logship // started again on the same ports and spool
	executor *harness.Executor
	extraDir string // host side of HANGAR_WORKER_EXTRA_MOUNTS, /e2e-extra in runs

	mu      sync.Mutex
	ls      *harness.Process // the current logship process
	runIDs  map[string]bool
	lsProcs []*harness.Process // every logship process started
}

func (d *durEnv) logshipProc() *harness.Process {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ls
}

func (d *durEnv) startLogship(t *testing.T) {
	t.Helper()
	p := d.logship.Start(t).Process
	d.mu.Lock()
	d.ls = p
	d.lsProcs = append(d.lsProcs, p)
	d.mu.Unlock()
}

// TestLogDurability is issue 4's "Shown by: fault tests over real
// processes" for the logs: a run that keeps printing numbered lines holding
// a secret goes through an S3 outage, then through a SIGKILL of logship, and
// in both cases its final object in S3 is its exact output, masked, in order,
// nothing lost and nothing twice, with no secret in any object of the run.
//
// The run (durEnv.submit) is a task of two phases, each of a single command, on the
// Docker runtime: "init" prints batch A, waits for gate 1 (a file of the
// extra mount), prints batch B (paced), waits for gate 2, prints batch C;
// "perform" prints batch D. The gates let the test put the fault where it
// wants it without any timing deciding the result.
//
// The stored log is checked whole (durCheckLog): the runtime's "+ command"
// echo lines come on stderr, a separate stream, so their place relative to
// the stdout lines of their phase is not fixed; the check takes each of them
// out (it must be there exactly once, within its phase), and what is left
// must equal, byte for byte, the log rebuilt from what the run printed: the
// executor's "[hangar] ..." lines where they are written (between the
// phases, and the final line) and every stdout line with the secret
// replaced by "******".
func TestLogDurability(t *testing.T) {
	harness.RequireDocker(t)
	if err := bins.Build("executor", "logship"); err != nil {
		t.Fatal(err)
	}
	ctl := bins.Path(t, "hangarctl")
	d := &durEnv{runIDs: map[string]bool{}}
	// Last resort, after the executor stopped: nothing of our runs stays on
	// the engine even when the test failed half-way.
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		harness.RemoveManaged(t, d.runIDs)
	})

	harness.BusyboxImage(t, durRunnerImage)
	d.cp = harness.NewControlPlane(t, ctl)
	broker, _ := d.cp.StartEmbeddedBroker(t)
	key, csr := d.cp.Keygen(t, t.TempDir())
	token := d.cp.CreatePool(t, "pool-dur", csr, broker)

	d.s3 = harness.StartS3(t, "hangar-logs")
	if err := os.WriteFile(filepath.Join(d.cp.Dir, "s3.json"), []byte(d.s3.ConfigJSON()), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := harness.StartPolicy(t, bins.Path(t, "policy"), "")
	// Live chunks often; Close answers after 2s when S3 is down (the
	// upload goes on in the background).
	d.logship = harness.NewLogship(t, bins.Path(t, "logship"), d.s3,
		"HANGAR_LOGSHIP_CHUNK_INTERVAL=300ms", "HANGAR_LOGSHIP_CLOSE_WAIT=2s")
	d.startLogship(t)
	d.obs = harness.Observe(t, broker, d.cp.Dir, "pool-dur")
	gw := harness.StartGateway(t, bins.Path(t, "gateway"), token, harness.KeyEnv(t, key), policy.GRPCAddr,
		"HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=gw-dur")

	d.extraDir = t.TempDir()
	if err := os.Chmod(d.extraDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d.executor = harness.StartExecutor(t, bins.Path(t, "executor"), "exec-dur", gw.GRPCAddr, d.logship.GRPCAddr,
		"HANGAR_EXECUTOR_SLOTS=2",
		"HANGAR_EXECUTOR_RUNTIME=docker",
		"HANGAR_CANCEL_GRACE=2s",
		"HANGAR_WORKER_EXTRA_MOUNTS="+d.extraDir+":/e2e-extra:ro",
	)
	d.obs.WaitHeartbeat(durWait, "heartbeat listing executor exec-dur", func(hb *eventv1.Heartbeat) bool {
		for _, e := range hb.GetExecutors() {
			if e.GetExecutorId() == "exec-dur" {
				return true
			}
		}
		return false
	})

	t.Run("S3 outage", d.testS3Outage)
	t.Run("logship SIGKILL", d.testLogshipKill)
	t.Run("nothing left behind", func(t *testing.T) {
		d.mu.Lock()
		ids := make(map[string]bool, len(d.runIDs))
		for id := range d.runIDs {
			ids[id] = true
		}
		d.mu.Unlock()
		if left := harness.ManagedLeftovers(t, ids); len(left) > 0 {
			t.Errorf("left on the Docker engine after the runs ended (labels hangar.managed=true):\n%s", strings.Join(left, "\n"))
		}
		if ws := d.executor.Workspaces(t); len(ws) > 0 {
			t.Errorf("the executor's work dir still holds workspaces %q", ws)
		}
	})
	t.Run("no service logs the secret", func(t *testing.T) {
		d.mu.Lock()
		procs := append([]*harness.Process{d.executor.Process, gw.Process, policy.Process}, d.lsProcs...)
		d.mu.Unlock()
		for _, p := range procs {
			if strings.Contains(p.Output(), durSecret) {
				t.Errorf("%s's own log contains the secret", p.Name)
			}
		}
	})
}

// durRun is one submitted durability run.
type durRun struct {
	id         string
	gate1      string
	gate2      string
	init, perf string // the commands of the two phases
	// live is the concatenation of the run's live chunk objects when
	// waitLive last saw them (logship removes them once the final log is
	// stored).
	live string
}

// durLine is line i as the run prints it (secret) or as it is stored (mask).
func durLine(i int, secret string) string {
	return fmt.Sprintf("line %05d secret=%s end\n", i, secret)
}

// durLoop prints lines up to (not including) to, from the shell variable
// i; paced, it sleeps 10ms every 20 lines (about 1 KiB), so that the output
// streams in small chunks for a second or so.
func durLoop(to int, paced bool) string {
	body := `printf 'line %05d secret=%s end\n' "$i" "$S"; i=$((i+1))`
	if paced {
		body += `; if [ $((i % 20)) -eq 0 ]; then sleep 0.01; fi`
	}
	return fmt.Sprintf(`while [ $i -lt %d ]; do %s; done`, to, body)
}

func durWaitFile(name string) string {
	return fmt.Sprintf("while [ ! -e /e2e-extra/%s ]; do sleep 0.1; done", name)
}

// submit submits the durability run to pool-dur (see TestLogDurability).
func (d *durEnv) submit(t *testing.T) *durRun {
	t.Helper()
	r := &durRun{id: newRunID(), gate1: harness.RandomName("dur-gate1-"), gate2: harness.RandomName("dur-gate2-")}
	r.init = strings.Join([]string{
		"i=0", durLoop(durBatchA, false),
		durWaitFile(r.gate1), durLoop(durBatchB, true),
		durWaitFile(r.gate2), durLoop(durBatchC, false),
	}, "; ")
	r.perf = fmt.Sprintf("i=%d; %s", durBatchC, durLoop(durBatchD, false))
	spec := harness.Task(durRunnerImage)
	spec.Phases = []harness.Phase{{Name: "init", Commands: []string{r.init}}, {Name: "perform", Commands: []string{r.perf}}}
	spec.Env = []harness.EnvVar{{Name: "S", Value: durSecret, Secret: true}}

	d.mu.Lock()
	d.runIDs[r.id] = true
	d.mu.Unlock()
	// Whatever happens, the run is not left waiting for its gates.
	t.Cleanup(func() { r.open(t, d, r.gate1); r.open(t, d, r.gate2) })

	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", spec.JSON())
	res := d.cp.Run(t, "run", "submit", "--dir", d.cp.Dir, "--pool", "pool-dur", "--spec", specFile, "--run-id", r.id)
	if res.Code != 0 || !strings.Contains(res.Stdout, "run "+r.id+" submitted to pool pool-dur") {
		t.Fatalf("hangarctl run submit: %s", res)
	}
	return r
}

func (r *durRun) open(t testing.TB, d *durEnv, gate string) {
	if err := os.WriteFile(filepath.Join(d.extraDir, gate), nil, 0o644); err != nil {
		t.Errorf("open gate %s: %v", gate, err)
	}
}

// expectedLog is the run's log without the "+ command" echo lines, as logship
// must store it: what the run printed on stdout, masked, and the executor's
// own lines.
func (r *durRun) expectedLog() string {
	var b strings.Builder
	b.WriteString("[hangar] phase init\n")
	for i := range durBatchC {
		b.WriteString(durLine(i, durMask))
	}
	b.WriteString("[hangar] phase perform\n")
	for i := durBatchC; i < durBatchD; i++ {
		b.WriteString(durLine(i, durMask))
	}
	fmt.Fprintf(&b, "\n[hangar] run %s: finished (exit code 0)\n", r.id)
	return b.String()
}

// waitLive waits until the run's live chunks in S3 hold line n: the run's
// output up to there is committed (acknowledged) and uploaded.
func (d *durEnv) waitLive(t *testing.T, r *durRun, n int) {
	t.Helper()
	want := durLine(n, durMask)
	durEventually(t, durWait, fmt.Sprintf("live chunk of run %s holding %q", r.id, strings.TrimSpace(want)), func() (bool, string) {
		live, keys := liveChunks(t, d.s3, r.id)
		if fin := d.finishedEvent(r.id); fin != nil {
			t.Fatalf("run %s ended before line %d reached the live chunks: %s", r.id, n, fin)
		}
		r.live = live
		return strings.Contains(live, want), fmt.Sprintf("%d live chunks, %d bytes", len(keys), len(live))
	})
}

// finishedEvent is the run's final event if it came.
func (d *durEnv) finishedEvent(runID string) *eventv1.RunFinished {
	for _, ev := range d.obs.RunEvents(runID) {
		if f := ev.GetFinished(); f != nil {
			return f
		}
	}
	return nil
}

// waitFinished waits for the run's final event. It fails t, the subtest (the
// observer's own waits fail the test that started it).
func (d *durEnv) waitFinished(t *testing.T, runID string) *eventv1.RunFinished {
	t.Helper()
	var fin *eventv1.RunFinished
	durEventually(t, 2*durWait, "finished event of "+runID, func() (bool, string) {
		fin = d.finishedEvent(runID)
		return fin != nil, fmt.Sprintf("%d events of the run", len(d.obs.RunEvents(runID)))
	})
	return fin
}

// waitFinal waits for the run's final object in S3.
func (d *durEnv) waitFinal(t *testing.T, runID string) (string, map[string]string) {
	t.Helper()
	key := "runs/" + runID + "/log"
	var body []byte
	var meta map[string]string
	durEventually(t, 2*durWait, "final log object "+key+" in S3", func() (bool, string) {
		var ok bool
		body, meta, ok = d.s3.Get(t, key)
		return ok, fmt.Sprintf("keys %q", d.s3.Keys(t, "runs/"+runID+"/"))
	})
	return string(body), meta
}

// checkFinished checks the run ended finished, exit code 0, naming its log.
func checkFinished(t *testing.T, runID string, fin *eventv1.RunFinished) {
	t.Helper()
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED || fin.GetExitCode() != 0 {
		t.Errorf("run %s: outcome %s exit %d %q, want finished, exit 0", runID, fin.GetOutcome(), fin.GetExitCode(), fin.GetReason())
	}
	if want := "runs/" + runID + "/log"; fin.GetLogKey() != want {
		t.Errorf("run %s: final event's log key %q, want %q", runID, fin.GetLogKey(), want)
	}
}

// checkStored runs the checks shared by both faults on the run's stored log:
// the final object is the expected log (durCheckLog), its metadata describe
// it, hangarctl logs --verify accepts it, and no object of the run holds the
// secret.
func (d *durEnv) checkStored(t *testing.T, r *durRun, final string, meta map[string]string) {
	t.Run("final log complete and in order", func(t *testing.T) {
		durCheckLog(t, r, final)
		sum := sha256.Sum256([]byte(final))
		if got := durMeta(meta, "hangar-bytes"); got != strconv.Itoa(len(final)) {
			t.Errorf("final object's metadata hangar-bytes %q, want %d (its size)", got, len(final))
		}
		if got := durMeta(meta, "hangar-sha256"); got != hex.EncodeToString(sum[:]) {
			t.Errorf("final object's metadata hangar-sha256 %q, want its SHA-256 %x", got, sum)
		}
		if !strings.HasPrefix(final, r.live) {
			t.Errorf("the live chunks seen during the run (%d bytes) are not a prefix of the final log", len(r.live))
		}
		t.Logf("final log %d bytes; live chunks seen during the run: %d bytes", len(final), len(r.live))
	})
	t.Run("hangarctl logs --verify", func(t *testing.T) {
		res := d.cp.Run(t, "logs", "--dir", d.cp.Dir, "--verify", r.id)
		if res.Code != 0 || res.Stdout != final || !strings.Contains(res.Stderr, fmt.Sprintf("verified: %d bytes", len(final))) {
			t.Errorf("hangarctl logs --verify %s: want exit 0, the stored log (%d bytes) and \"verified: %d bytes\": exit %d, %d bytes\n--- stderr:\n%s",
				r.id, len(final), len(final), res.Code, len(res.Stdout), res.Stderr)
		}
	})
	t.Run("secret masked in every object", func(t *testing.T) {
		// A finished log lives in one place: logship removed the live
		// chunks once the final log was stored.
		keys := d.s3.Keys(t, "runs/"+r.id+"/")
		if !slices.Equal(keys, []string{"runs/" + r.id + "/log"}) {
			t.Errorf("objects of run %s: %q, want the final log only", r.id, keys)
		}
		bodies := map[string]string{"live chunks seen during the run": r.live}
		for _, k := range keys {
			body, _, _ := d.s3.Get(t, k)
			bodies["S3 object "+k] = string(body)
		}
		for where, body := range bodies {
			for what, s := range durForbidden() {
				if strings.Contains(body, s) {
					t.Errorf("%s contains %s", where, what)
				}
			}
		}
		if n, want := strings.Count(final, durMask), durBatchD; n != want {
			t.Errorf("the final log has the mask %d times, want %d (once in each line the run printed)", n, want)
		}
	})
}

// durMeta is an object's user metadata value (stored by the S3 server under
// its header name, X-Amz-Meta-<Name>).
func durMeta(meta map[string]string, name string) string {
	for k, v := range meta {
		if strings.EqualFold(strings.TrimPrefix(strings.ToLower(k), "x-amz-meta-"), name) {
			return v
		}
	}
	return ""
}

// durForbidden is what must never reach S3 or the spool: the secret, its
// halves (a raw piece of a secret held back by the masker, written out), and
// its base64.
func durForbidden() map[string]string {
	h := len(durSecret) / 2
	return map[string]string{
		"the secret":               durSecret,
		"the secret's first half":  durSecret[:h],
		"the secret's second half": durSecret[h:],
		"the secret's base64":      base64.StdEncoding.EncodeToString([]byte(durSecret)),
	}
}

var durLineRE = regexp.MustCompile(`(?m)^line (\d{5}) `)

// durCheckLog checks that log is exactly the run's expected log once each
// phase's "+ command" line (stderr) is taken out; that line must be there
// exactly once, after its phase's header and before the next one.
func durCheckLog(t *testing.T, r *durRun, log string) {
	t.Helper()
	rest := log
	headers := []string{"[hangar] phase init\n", "[hangar] phase perform\n", fmt.Sprintf("\n[hangar] run %s: finished", r.id)}
	for i, cmd := range []string{r.init, r.perf} {
		echo := "+ " + cmd + "\n"
		if n := strings.Count(rest, echo); n != 1 {
			t.Errorf("the log holds the echo of phase %d's command %d times, want once", i+1, n)
			continue
		}
		at := strings.Index(rest, echo)
		// Logship masks each stream on its own, and the executor interleaves
		// stdout and stderr as their chunks come: the echo may cut a stdout
		// line (even before a mask, the stdout masker holding back the
		// start of a secret), but not its phase's header or the next.
		from, to := strings.Index(rest, headers[i]), strings.Index(rest, headers[i+1])
		if from < 0 || at < from+len(headers[i]) || to >= 0 && at > to {
			t.Errorf("the echo of phase %d's command is at byte %d, not between its phase's header (%d) and the next (%d):\n%q",
				i+1, at, from, to, rest[max(0, at-120):min(len(rest), at+len(echo)+120)])
		}
		if at > 0 && rest[at-1] != '\n' {
			t.Logf("the echo of phase %d's command (stderr) cuts a stdout line: %q", i+1, rest[max(0, at-40):at])
		}
		rest = rest[:at] + rest[at+len(echo):]
	}
	want := r.expectedLog()
	if rest == want {
		return
	}
	// Say how it differs: lines lost, twice, out of order, or something else.
	var nums []int
	for _, m := range durLineRE.FindAllStringSubmatch(rest, -1) {
		n, _ := strconv.Atoi(m[1])
		nums = append(nums, n)
	}
	seen := map[int]int{}
	var dup, outOfOrder []int
	for i, n := range nums {
		seen[n]++
		if seen[n] == 2 {
			dup = append(dup, n)
		}
		if i > 0 && n != nums[i-1]+1 && len(outOfOrder) < 10 {
			outOfOrder = append(outOfOrder, n)
		}
	}
	var missing []int
	for n := range durBatchD {
		if seen[n] == 0 {
			missing = append(missing, n)
		}
	}
	wl, gl := strings.SplitAfter(want, "\n"), strings.SplitAfter(rest, "\n")
	first := 0
	for first < len(wl) && first < len(gl) && wl[first] == gl[first] {
		first++
	}
	ctx := func(ls []string) string {
		return strings.Join(ls[max(0, first-2):min(len(ls), first+3)], "")
	}
	t.Errorf("the stored log (echo lines taken out: %d bytes) is not the run's output, masked (%d bytes):\n"+
		"numbered lines: %d, want %d; missing %s; twice %s; out of order at %s\n"+
		"first difference at line %d:\n--- want:\n%s--- got:\n%s",
		len(rest), len(want), len(nums), durBatchD, durFew(missing), durFew(dup), durFew(outOfOrder),
		first+1, ctx(wl), ctx(gl))
	if os.Getenv("HANGAR_E2E_SHOW_LOGS") != "" {
		t.Logf("stored log:\n%s", log)
	}
}

func durFew(ns []int) string {
	if len(ns) == 0 {
		return "none"
	}
	if len(ns) > 10 {
		return fmt.Sprintf("%v... (%d)", ns[:10], len(ns))
	}
	return fmt.Sprint(ns)
}

// testS3Outage: S3 goes away after batch A is acknowledged and uploaded, the
// run prints the rest and finishes while S3 is down, S3 comes back on the
// same port with the same objects, and the final object arrives complete.
func (d *durEnv) testS3Outage(t *testing.T) {
	defer d.s3.Start(t) // whatever happens, S3 is back for the next subtest
	ls := d.logship
	r := d.submit(t)
	d.waitLive(t, r, durBatchA-1)

	d.s3.Stop()
	t.Logf("S3 stopped after line %d was uploaded", durBatchA-1)
	r.open(t, d, r.gate1)
	r.open(t, d, r.gate2)

	// Logship acknowledges from its spool: the run ends finished while S3
	// is down.
	fin := d.waitFinished(t, r.id)
	checkFinished(t, r.id, fin)
	if _, _, ok := d.s3.Get(t, "runs/"+r.id+"/log"); ok {
		t.Fatalf("the final log object exists although S3 was down")
	}
	var during map[string]float64
	durEventually(t, durWait, "S3 upload error in logship's metrics while S3 is down", func() (bool, string) {
		during = durMetrics(t, ls.DebugAddr)
		return during["hangar_logship_s3_upload_errors_total"] > 0, fmt.Sprintf("hangar_logship_s3_upload_errors_total %v", during["hangar_logship_s3_upload_errors_total"])
	})
	if during["hangar_logship_spool_bytes"] <= 0 {
		t.Errorf("hangar_logship_spool_bytes %v while S3 is down and the run's log is not uploaded, want > 0", during["hangar_logship_spool_bytes"])
	}
	t.Logf("while S3 is down: upload errors %v, spool bytes %v", during["hangar_logship_s3_upload_errors_total"], during["hangar_logship_spool_bytes"])

	d.s3.Start(t)
	final, meta := d.waitFinal(t, r.id)
	d.checkStored(t, r, final, meta)
	t.Run("metrics", func(t *testing.T) {
		d.checkSpoolEmpty(t, ls.DebugAddr)
		if m := durMetrics(t, ls.DebugAddr); m["hangar_logship_s3_upload_errors_total"] <= 0 {
			t.Errorf("hangar_logship_s3_upload_errors_total %v after the outage, want > 0", m["hangar_logship_s3_upload_errors_total"])
		}
	})
}

// checkSpoolEmpty waits for hangar_logship_spool_bytes to come back to 0 (the
// spool is removed right after the final upload).
func (d *durEnv) checkSpoolEmpty(t *testing.T, debugAddr string) {
	t.Helper()
	durEventually(t, durWait, "hangar_logship_spool_bytes back to 0 after the final upload", func() (bool, string) {
		v := durMetrics(t, debugAddr)["hangar_logship_spool_bytes"]
		return v == 0, fmt.Sprintf("hangar_logship_spool_bytes %v", v)
	})
}

// testLogshipKill: logship is killed (SIGKILL) while batch B streams in; the
// first phase prints the rest of B and C while logship is down. Its command
// then exits, but the phase does not end: the relay reports a command's exit
// only once the executor has acknowledged everything before it, and the
// executor acknowledges only what logship stores (ADR 0016). So while logship
// is down the run waits at the phase boundary, its first phase's container up
// with only the relay left in it: it neither ends nor moves on to its second
// phase, and nothing it printed is dropped. Logship starts again with the same
// ports and spool directory, the executor resends from logship's next
// expected sequence, and the run goes on: the second phase (batch D), then
// finished, its stored log complete.
func (d *durEnv) testLogshipKill(t *testing.T) {
	if !d.s3.Running() {
		t.Fatal("S3 is not running (the previous subtest failed to start it again)")
	}
	old := d.logshipProc()
	restarted := false
	r := d.submit(t)
	defer func() {
		select {
		case <-old.Done():
		default:
			return // not killed: still serving
		}
		if restarted {
			return
		}
		// The subtest failed with logship down: start it again so that the
		// executor can close the run's log, and give the run (its gates
		// opened) a bounded time to end before the cleanups stop everything.
		d.startLogship(t)
		r.open(t, d, r.gate1)
		r.open(t, d, r.gate2)
		for deadline := time.Now().Add(durWait); d.finishedEvent(r.id) == nil && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
	}()
	d.waitLive(t, r, durBatchA-1)
	before := durMetrics(t, d.logship.DebugAddr)["hangar_logship_bytes_in_total"]

	// Kill it once it has received some 8 KiB of batch B (about 170 of its
	// 2000 lines, printed over a second or more): in the middle of the
	// batch, most likely with chunks written to the spool but not yet
	// committed (they are rolled back at the reopen and resent). Where
	// exactly does not matter to the result.
	r.open(t, d, r.gate1)
	var at float64
	durEventually(t, durWait, "part of batch B received by logship", func() (bool, string) {
		at = durMetrics(t, d.logship.DebugAddr)["hangar_logship_bytes_in_total"]
		return at > before+8<<10, fmt.Sprintf("hangar_logship_bytes_in_total %v, %v before the gate", at, before)
	})
	old.Kill()
	t.Logf("logship killed (SIGKILL) after receiving %v raw bytes (%v before batch B); %s", at, before, durSpoolState(d.logship.SpoolDir, r.id))

	t.Run("no secret in the spool after SIGKILL", func(t *testing.T) {
		if hits := durFilesContaining(t, d.logship.SpoolDir, durForbidden()); len(hits) > 0 {
			t.Errorf("secret material on disk in logship's spool:\n%s", strings.Join(hits, "\n"))
		}
	})

	// The rest of the first phase happens while logship is down: its
	// command prints the rest of B and C and exits. The relay holds the
	// exit until all of it is stored, so the run stays in that phase.
	r.open(t, d, r.gate2)
	ctr := durPhaseContainer(t, r.id, "init")
	durEventually(t, durWait, "exit of phase init's command (only the relay left in its container "+ctr+")", func() (bool, string) {
		return durRelayAlone(t, ctr)
	})
	if fin := d.finishedEvent(r.id); fin != nil {
		t.Fatalf("run %s finished while logship was down (its log cannot have been closed): %v", r.id, fin)
	}
	if d.phaseEvent(r.id, "perform") {
		t.Fatalf("run %s went on to phase perform while logship was down: the output of phase init cannot have been stored (ADR 0016)", r.id)
	}
	// Still running after the checks above: the relay had not been told
	// everything was stored when they were made.
	if state := harness.MustDocker(t, "inspect", "--format", "{{.State.Status}}", ctr); state != "running" {
		t.Fatalf("phase init's container %s is %q while logship is down, want running: its relay must hold the command's exit until the output is stored", ctr, state)
	}
	t.Logf("phase init's command exited while logship was down; the run waits at the phase boundary")

	d.startLogship(t)
	restarted = true
	durEventually(t, durWait, "phase perform event of "+r.id+" after logship started again", func() (bool, string) {
		return d.phaseEvent(r.id, "perform"), fmt.Sprintf("%d events of the run", len(d.obs.RunEvents(r.id)))
	})
	fin := d.waitFinished(t, r.id)
	checkFinished(t, r.id, fin)
	final, meta := d.waitFinal(t, r.id)
	d.checkStored(t, r, final, meta)
	t.Run("metrics", func(t *testing.T) {
		d.checkSpoolEmpty(t, d.logship.DebugAddr)
	})
	if !strings.Contains(d.executor.Output(), "reopening") {
		t.Logf("the executor's log does not say it reopened the log stream (informational)")
	}
}

// phaseEvent says whether the run's phase event for phase came.
func (d *durEnv) phaseEvent(runID, phase string) bool {
	for _, ev := range d.obs.RunEvents(runID) {
		if ev.GetPhase().GetPhase() == phase {
			return true
		}
	}
	return false
}

// durPhaseContainer is the id of the running container of the run's phase
// (labels hangar.run-id and hangar.phase).
func durPhaseContainer(t *testing.T, runID, phase string) string {
	t.Helper()
	var id string
	durEventually(t, durWait, "running container of phase "+phase+" of run "+runID, func() (bool, string) {
		out := harness.MustDocker(t, "ps", "-q", "--no-trunc", "--filter", "label=hangar.run-id="+runID, "--filter", "label=hangar.phase="+phase)
		ids := strings.Fields(out)
		if len(ids) == 1 {
			id = ids[0]
		}
		return len(ids) == 1, fmt.Sprintf("running: %q", ids)
	})
	return id
}

// durRelayAlone says whether the phase command the relay started in
// container ctr has exited: the relay (the entrypoint /.hangar/relay, under
// the engine's init) is there and has no child process left. The relay gone
// fails the test: it is called while logship is down, when the relay must
// wait.
func durRelayAlone(t *testing.T, ctr string) (bool, string) {
	t.Helper()
	gone := func(what string) {
		state := harness.Docker(t, "inspect", "--format", "{{.State.Status}} (exit code {{.State.ExitCode}})", ctr)
		t.Fatalf("phase init's container %s %s while logship is down (state: %s): its relay must hold the command's exit until the output is stored (ADR 0016)",
			ctr, what, strings.TrimSpace(state.Stdout+state.Stderr))
	}
	res := harness.Docker(t, "top", ctr, "-o", "pid,ppid,args")
	if res.Code != 0 {
		gone("cannot be listed (" + strings.TrimSpace(res.Stderr) + ")")
	}
	type proc struct{ pid, ppid, args string }
	var procs []proc
	relay := ""
	for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		p := proc{f[0], f[1], strings.Join(f[2:], " ")}
		procs = append(procs, p)
		if strings.HasPrefix(f[2], "/.hangar/relay") {
			relay = p.pid
		}
	}
	if relay == "" {
		gone(fmt.Sprintf("has no relay process (processes: %q)", procs))
	}
	n := 0
	for _, p := range procs {
		if p.ppid == relay {
			n++
		}
	}
	return n == 0, fmt.Sprintf("%d processes in the container, %d of them children of the relay (pid %s)", len(procs), n, relay)
}

// durSpoolState describes, for the test's log, what logship's spool holds of
// a run (layout of package spool: <run>/log, and <run>/state with two slots
// of 4096 bytes, each the state's JSON on its first line and "generation
// checksum" on its second; the slot of the highest generation is the last
// save): the committed (acknowledged) bytes and sequence, and the bytes
// written after the last commit, which a reopen rolls back. Informational
// only (the slots' checksums are not checked here).
func durSpoolState(spoolDir, runID string) string {
	var st struct {
		AckedSequence uint64 `json:"acked_sequence"`
		MaskedBytes   int64  `json:"masked_bytes"`
	}
	b, err := os.ReadFile(filepath.Join(spoolDir, runID, "state"))
	if err != nil {
		return "spool state unknown: " + err.Error()
	}
	var best []byte
	var bestGen uint64
	for k := 0; k*4096 < len(b); k++ {
		lines := strings.SplitN(string(b[k*4096:min(len(b), (k+1)*4096)]), "\n", 3)
		if len(lines) < 3 {
			continue
		}
		gen, _, _ := strings.Cut(lines[1], " ")
		if g, err := strconv.ParseUint(gen, 10, 64); err == nil && g >= bestGen {
			best, bestGen = []byte(lines[0]), g
		}
	}
	if err := json.Unmarshal(best, &st); err != nil {
		return "spool state unknown: " + err.Error()
	}
	fi, err := os.Stat(filepath.Join(spoolDir, runID, "log"))
	if err != nil {
		return "spool log unknown: " + err.Error()
	}
	return fmt.Sprintf("spool: acked through chunk %d, %d masked bytes committed, %d more written and not committed",
		st.AckedSequence, st.MaskedBytes, fi.Size()-st.MaskedBytes)
}
