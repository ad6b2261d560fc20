package e2e

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// Secrets of TestLogs' corpus run. logsLong is long enough for base64 (76
// columns) and xxd -p (60) to wrap it, and holds the characters that
// percent-encoding and JSON escape ('/', '+', '&', '<', '>', '=').
const (
	logsLong = "lOng-S3cr3t/Kq7vZ2xW9pL4mN8bR1tY6uE3oI5aS0dF+gH7jK2lQ9wE4rT6yU1&iO3pA8sD5<fG0>hJ2=kL7zX"
	logsPIN  = "q9Z"
)

// logsPEM is a private key as a secret: a multi-line value (its body is
// random bytes in base64, 64 columns, as PEM has it).
var logsPEM = func() string {
	body := make([]byte, 300)
	for i := range body {
		body[i] = byte(i*131 + 17)
	}
	b64 := base64.StdEncoding.EncodeToString(body)
	var b strings.Builder
	b.WriteString("-----BEGIN PRIVATE KEY-----\n")
	for len(b64) > 64 {
		b.WriteString(b64[:64] + "\n")
		b64 = b64[64:]
	}
	b.WriteString(b64 + "\n-----END PRIVATE KEY-----")
	return b.String()
}()

// logsCase is a case of the masking corpus: a shell pipeline printing an
// encoding of a secret, and the strings that must never appear contiguous
// (line breaks taken out) in what logship stores or shows.
type logsCase struct {
	name, cmd string
	forbidden []string
}

// percent encodes every byte of s as %XX (hex digits by hexDigits).
func percentAll(s string, upper bool) string {
	var b strings.Builder
	for i := range len(s) {
		h := hex.EncodeToString([]byte{s[i]})
		if upper {
			h = strings.ToUpper(h)
		}
		b.WriteString("%" + h)
	}
	return b.String()
}

// logsCorpus is one case per encoding class of docs/MASKING.md.
func logsCorpus() []logsCase {
	b64 := base64.StdEncoding.EncodeToString
	hexLower := hex.EncodeToString([]byte(logsLong))
	// The part of a base64 form that depends only on the secret, at each of
	// the three alignments in a longer blob.
	var b64Cores []string
	for pad := range 3 {
		e := b64([]byte(strings.Repeat("x", pad) + logsLong))
		b64Cores = append(b64Cores, e[4:len(e)-4])
	}
	urlCores := make([]string, len(b64Cores))
	for i, c := range b64Cores {
		urlCores[i] = strings.NewReplacer("+", "-", "/", "_").Replace(c)
	}
	mixed := strings.NewReplacer("%2F", "%2f", "%3C", "%3c", "%3D", "%3d").Replace(percentAll(logsLong, true))
	query := strings.NewReplacer("/", "%2f", "+", "%2B", "&", "%26", "<", "%3c", ">", "%3E", "=", "%3d").Replace(logsLong)
	jsonSlash := strings.ReplaceAll(logsLong, "/", `\/`)
	jsonU := strings.NewReplacer("<", `\u003c`, ">", `\u003e`, "&", `\u0026`).Replace(logsLong)
	pemB64 := b64([]byte(logsPEM + "\n"))
	var pemLines []string
	for _, l := range strings.Split(logsPEM, "\n") {
		if !strings.HasPrefix(l, "-----") {
			pemLines = append(pemLines, l)
		}
	}
	od := `od -An -tx1 -v | tr -d ' \n'`
	return []logsCase{
		{"raw", `printf '%s\n' "$LONG"`, []string{logsLong}},
		{"base64 one line", `printf %s "$LONG" | base64 -w 0; echo`, b64Cores},
		{"base64 wrapped at 76", `printf %s "$LONG" | base64`, b64Cores},
		{"base64 at an offset, wrapped", `printf 'user:%s' "$LONG" | base64`, b64Cores},
		{"base64url unpadded", `printf %s "$LONG" | base64 -w 0 | tr '+/' '-_' | tr -d '='; echo`, urlCores},
		{"hex lower", `printf %s "$LONG" | ` + od + `; echo`, []string{hexLower}},
		{"hex upper", `printf %s "$LONG" | ` + od + ` | tr a-f A-F; echo`, []string{strings.ToUpper(hexLower)}},
		{"xxd -p, wrapped at 60", `printf %s "$LONG" | xxd -p`, []string{hexLower}},
		{"percent lower case", `printf %s "$LONG" | ` + od + ` | sed 's/../%&/g'; echo`, []string{percentAll(logsLong, false)}},
		{"percent mixed case", `printf %s "$LONG" | ` + od + ` | tr a-f A-F | sed 's/../%&/g' | sed 's/%2F/%2f/g; s/%3C/%3c/g; s/%3D/%3d/g'; echo`,
			[]string{mixed}},
		{"percent query form", `printf '%s\n' "$LONG" | sed 's#/#%2f#g; s#+#%2B#g; s#&#%26#g; s#<#%3c#g; s#>#%3E#g; s#=#%3d#g'`, []string{query}},
		{"JSON with \\/", `printf '{"token":"%s"}\n' "$(printf %s "$LONG" | sed 's#/#\\/#g')"`, []string{jsonSlash}},
		{"JSON with \\u escapes", `printf '{"token":"%s"}\n' "$(printf %s "$LONG" | sed 's#<#\\u003c#g; s#>#\\u003e#g; s#&#\\u0026#g')"`,
			[]string{jsonU}},
		{"multi-line value", `printf '%s\n' "$PEM"`, pemLines},
		{"multi-line value with \\r\\n", `printf '%s\n' "$PEM" | sed 's/$/\r/'`, pemLines},
		{"PEM through base64", `printf '%s\n' "$PEM" | base64`, []string{pemB64[4 : len(pemB64)-4]}},
	}
}

// logsEnv is the stack of TestLogs: embedded broker, policy (every run
// allowed), one gateway, logship writing to an S3-compatible server, one
// Docker executor.
type logsEnv struct {
	cp      *harness.ControlPlane
	s3      *harness.S3
	logship *harness.Logship
	obs     *harness.Observer
	runIDs  map[string]bool
}

// TestLogs is issue 10's "Shown by" over the real pipeline (Docker run →
// executor → logship → S3, read back with hangarctl logs, through Tail and
// live with run submit --follow): the masking corpus, a case for every
// encoding class of docs/MASKING.md on stdout and on stderr, and a log
// that reads like the same script's output in a terminal.
func TestLogs(t *testing.T) {
	harness.RequireDocker(t)
	if err := bins.Build("executor", "logship"); err != nil {
		t.Fatal(err)
	}
	harness.BusyboxImage(t, runnerImage)
	x := &logsEnv{runIDs: map[string]bool{}}
	t.Cleanup(func() { harness.RemoveManaged(t, x.runIDs) })
	x.cp = harness.NewControlPlane(t, bins.Path(t, "hangarctl"))
	broker, _ := x.cp.StartEmbeddedBroker(t)
	key, csr := x.cp.Keygen(t, t.TempDir())
	token := x.cp.CreatePool(t, "pool-logs", csr, broker)
	x.s3 = harness.StartS3(t, "hangar-logs")
	if err := os.WriteFile(filepath.Join(x.cp.Dir, "s3.json"), []byte(x.s3.ConfigJSON()), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := harness.StartPolicy(t, bins.Path(t, "policy"), "")
	x.logship = harness.StartLogship(t, bins.Path(t, "logship"), x.s3, "HANGAR_LOGSHIP_CHUNK_INTERVAL=300ms")
	x.obs = harness.Observe(t, broker, x.cp.Dir, "pool-logs")
	gw := harness.StartGateway(t, bins.Path(t, "gateway"), token, harness.KeyEnv(t, key), policy.GRPCAddr,
		"HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=gw-logs")
	harness.StartExecutor(t, bins.Path(t, "executor"), "exec-logs", gw.GRPCAddr, x.logship.GRPCAddr,
		"HANGAR_EXECUTOR_SLOTS=2", "HANGAR_EXECUTOR_RUNTIME=docker")
	waitExecutors(t, x.obs, "exec-logs")

	t.Run("masking corpus", x.testCorpus)
	t.Run("reads like the terminal", x.testTerminalOrder)
}

// run submits spec and follows it to the end; it returns the run id, the
// --follow output (the live log through Tail) and the stored log.
func (x *logsEnv) run(t *testing.T, spec *harness.RunSpec) (runID, live, stored string) {
	t.Helper()
	runID = newRunID()
	x.runIDs[runID] = true
	specFile := harness.WriteFile(t, t.TempDir(), "spec.json", spec.JSON())
	sub := harness.Start(t, "submit-"+runID, nil, x.cp.Ctl, "run", "submit", "--dir", x.cp.Dir, "--pool", "pool-logs",
		"--spec", specFile, "--run-id", runID, "--follow", "--logship", x.logship.GRPCAddr, "--timeout", "3m")
	if code := sub.WaitExit(4 * time.Minute); code != 0 {
		t.Fatalf("hangarctl run submit --follow: exit %d:\n%s", code, sub.Output())
	}
	fin := x.obs.WaitEvent(2*wait, "finished event of "+runID, func(ev *eventv1.Event) bool {
		return ev.GetRunId() == runID && ev.GetFinished() != nil
	}).GetFinished()
	if fin.GetOutcome() != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("run %s: %s %q", runID, fin.GetOutcome(), fin.GetReason())
	}
	key := "runs/" + runID + "/log"
	deadline := time.Now().Add(wait)
	for {
		body, _, ok := x.s3.Get(t, key)
		if ok {
			stored = string(body)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no final log %s in S3 (keys %q)", key, x.s3.Keys(t, "runs/"+runID+"/"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if os.Getenv("HANGAR_E2E_SHOW_LOGS") != "" {
		t.Logf("stored log of run %s:\n%s", runID, stored)
	}
	return runID, sub.Output(), stored
}

// tail reads a run's log through logship's Tail (from S3 once finished).
func (x *logsEnv) tail(t *testing.T, runID string) string {
	t.Helper()
	conn, err := grpc.NewClient(x.logship.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := logsv1.NewLogServiceClient(conn).Tail(ctx, &logsv1.TailRequest{RunId: runID})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		resp, err := st.Recv()
		if err == io.EOF {
			return b.String()
		}
		if err != nil {
			t.Fatalf("Tail %s: %v", runID, err)
		}
		b.Write(resp.GetData())
		if resp.GetEnd() {
			return b.String()
		}
	}
}

func (x *logsEnv) testCorpus(t *testing.T) {
	corpus := logsCorpus()
	var commands []string
	for _, c := range corpus {
		commands = append(commands,
			fmt.Sprintf("echo 'case:%s'; %s; echo 'end:%s'", c.name, c.cmd, c.name),
			fmt.Sprintf("{ echo 'case:%s (stderr)'; %s; echo 'end:%s (stderr)'; } >&2", c.name, c.cmd, c.name))
	}
	// The secret's halves on stdout and stderr, in one line of the script.
	commands = append(commands, `echo 'case:split across streams'; printf %s "$LONG" | head -c 40; printf %s "$LONG" | tail -c +41 >&2; echo; echo 'end:split across streams'`)
	spec := harness.Task(runnerImage, commands...)
	spec.Env = []harness.EnvVar{{Name: "LONG", Value: logsLong, Secret: true}, {Name: "PEM", Value: logsPEM, Secret: true},
		{Name: "PIN", Value: logsPIN, Secret: true}}
	runID, live, stored := x.run(t, spec)

	logs := harness.Run(t, 2*time.Minute, nil, x.cp.Ctl, "logs", "--dir", x.cp.Dir, "--verify", runID)
	if logs.Code != 0 || logs.Stdout != stored {
		t.Errorf("hangarctl logs --verify %s: want exit 0 and the stored log (%d bytes): %s", runID, len(stored), logs)
	}
	tail := x.tail(t, runID)
	if tail != stored {
		t.Errorf("Tail of %s (%d bytes) differs from the stored log (%d bytes)", runID, len(tail), len(stored))
	}
	// The user is told which secret was too short to mask.
	if !strings.HasPrefix(stored, "[hangar] not masked in this log (shorter than 6 bytes): PIN\n") {
		t.Errorf("the log does not start by naming the secret too short to mask:\n%.300s", stored)
	}
	// The executor's footer is the last line, after what the maskers held.
	if !regexp.MustCompile(`\n\[hangar\] run ` + regexp.QuoteMeta(runID) + `: finished \(exit code 0\)\n$`).MatchString(stored) {
		t.Errorf("the footer is not the stored log's last line:\n%s", stored[max(0, len(stored)-300):])
	}
	// A finished log lives in one place.
	if keys := x.s3.Keys(t, "runs/"+runID+"/"); len(keys) != 1 {
		t.Errorf("objects of the finished run: %q, want the final log only", keys)
	}

	strip := strings.NewReplacer("\r", "", "\n", "")
	readers := map[string]string{"the stored log": stored, "Tail": tail, "--follow": live}
	for _, c := range append(corpus, logsCase{name: "split across streams", forbidden: []string{logsLong}}) {
		t.Run(c.name, func(t *testing.T) {
			for where, text := range readers {
				for _, f := range c.forbidden {
					if strings.Contains(strip.Replace(text), f) {
						t.Errorf("%s holds %q (line breaks taken out)", where, f)
					}
				}
			}
			for _, label := range []string{c.name, c.name + " (stderr)"} {
				if c.name == "split across streams" && label != c.name {
					continue
				}
				m := regexp.MustCompile(`(?s)case:` + regexp.QuoteMeta(label) + `\n(.*?)end:` + regexp.QuoteMeta(label) + `\n`).FindStringSubmatch(stored)
				if m == nil {
					t.Errorf("the stored log lacks the lines of %q", label)
					continue
				}
				if c.name != "split across streams" && !strings.Contains(m[1], "******") {
					t.Errorf("%q: no mask in %q", label, m[1])
				}
			}
		})
	}
}

// terminalScript is the script the executor runs for one phase
// (runner.PhaseScript): each command echoed as "+ command" on stderr, then
// run, under set -e.
func terminalScript(commands []string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "printf '%%s\\n' '%s' >&2\n%s\n", strings.ReplaceAll("+ "+c, "'", `'\''`), c)
	}
	return b.String()
}

// testTerminalOrder runs a script that alternates stdout and stderr line
// by line, and compares the stored log, without the executor's own
// "[hangar]" lines, with the same script's output in a terminal: the same
// busybox image under `docker run -t` (a pty: both streams on one
// device, in the order written).
//
// The executor's relay gives the command's fd 1 and fd 2 one pipe by
// default, like a terminal (ADR 0020): one channel keeps the order of the
// writes, which two pipes cannot (a shell writes both faster than any
// reader wakes).
func (x *logsEnv) testTerminalOrder(t *testing.T) {
	commands := []string{
		"echo out-1",
		"echo err-1 >&2",
		"echo out-2; echo err-2 >&2; echo out-3",
		"for i in 1 2 3; do echo loop-out-$i; echo loop-err-$i >&2; done",
		"ls /nonexistent-e2e 2>&1 >/dev/null | sed 's/^/piped: /' >&2 || true",
		// A partial stdout line, then stderr: one row of the terminal.
		"printf 'partial-out '; echo then-err >&2",
		"echo last",
	}
	_, _, stored := x.run(t, harness.Task(runnerImage, commands...))
	var got []string
	for _, l := range strings.Split(stored, "\n") {
		if l != "" && !strings.HasPrefix(l, "[hangar]") {
			got = append(got, l)
		}
	}
	name := harness.RandomName("hangar-e2e-tty-")
	term := harness.Docker(t, "run", "--rm", "-t", "--name", name, "--network", "none", runnerImage, "sh", "-c", terminalScript(commands))
	if term.Code != 0 {
		t.Fatalf("the script in a terminal: %s", term)
	}
	var want []string
	for _, l := range strings.Split(strings.ReplaceAll(term.Stdout, "\r\n", "\n"), "\n") {
		if l != "" {
			want = append(want, l)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the stored log does not read like the terminal:\n--- stored (without [hangar] lines)\n%s\n--- terminal\n%s",
			strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.HasSuffix(strings.TrimRight(stored, "\n"), ": finished (exit code 0)") {
		t.Errorf("the footer is not the stored log's last line:\n%s", stored)
	}
}
