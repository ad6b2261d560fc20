package processrt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
)

// output is an io.Writer safe for the runtime's two writer goroutines, which
// lets a test wait for a string to appear.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newOutput() *output { return &output{changed: make(chan struct{}, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.buf.Write(p)
	select {
	case o.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output contains s and returns the output.
func (o *output) waitFor(t *testing.T, s string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if out := o.String(); strings.Contains(out, s) {
			return out
		}
		select {
		case <-o.changed:
		case <-deadline:
			t.Fatalf("output never contained %q; got %q", s, o.String())
		}
	}
}

// withoutTraces is out without the runtime's "+ command" lines, which come
// on the same pipe as the commands' output by default (ADR 0020).
func withoutTraces(out string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(l, "+ ") {
			b.WriteString(l)
		}
	}
	return b.String()
}

func phase(name string, commands ...string) *runv1.Phase {
	return &runv1.Phase{Name: name, Commands: commands}
}

func newJob(t *testing.T, phases ...*runv1.Phase) (*runner.Job, *output, *output) {
	t.Helper()
	stdout, stderr := newOutput(), newOutput()
	return &runner.Job{
		RunID:     "run-1",
		Spec:      &runv1.RunSpec{Phases: phases},
		Workspace: t.TempDir(),
		Env:       []string{"HANGAR_TEST=1"},
		Stdout:    stdout,
		Stderr:    stderr,
		StopGrace: 10 * time.Second,
	}, stdout, stderr
}

// TestRunPhasesAndHooksInOrder: phases and their hooks run in order; by
// default a phase's stdout and stderr are one pipe, so the "+ command"
// traces (stderr) come before each command's output, as in a terminal
// (ADR 0020); with SeparateStderr they go to the output's Stderr.
func TestRunPhasesAndHooksInOrder(t *testing.T) {
	tests := []struct {
		name             string
		rt               Runtime
		wantOut, wantErr string
	}{
		{"one pipe (default)", Runtime{},
			"phase init\n+ echo before-init\nbefore-init\n+ echo init\ninit\n+ echo after-init\nafter-init\n" +
				"phase apply\n+ echo before-apply\nbefore-apply\n+ echo apply\napply\n+ echo apply-2\napply-2\n", ""},
		{"separate stderr", Runtime{SeparateStderr: true},
			"phase init\nbefore-init\ninit\nafter-init\nphase apply\nbefore-apply\napply\napply-2\n",
			"+ echo before-init\n+ echo init\n+ echo after-init\n+ echo before-apply\n+ echo apply\n+ echo apply-2\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			job, stdout, stderr := newJob(t,
				&runv1.Phase{Name: "init", Before: []string{"echo before-init"}, Commands: []string{"echo init"}, After: []string{"echo after-init"}},
				&runv1.Phase{Name: "plan"}, // nothing to run: skipped
				&runv1.Phase{Name: "apply", Before: []string{"echo before-apply"}, Commands: []string{"echo apply", "echo apply-2"}},
			)
			var phases []string
			job.OnPhase = func(p string) {
				phases = append(phases, p)
				_, _ = stdout.Write([]byte("phase " + p + "\n"))
			}
			res := supervise.Run(context.Background(), tc.rt, job, supervise.Limits{})
			if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED || res.ExitCode != 0 || res.Reason != "" {
				t.Fatalf("result = %+v, want FINISHED, exit 0", res)
			}
			if want := []string{"init", "apply"}; !slices.Equal(phases, want) {
				t.Errorf("OnPhase calls = %q, want %q", phases, want)
			}
			if got := stdout.String(); got != tc.wantOut {
				t.Errorf("stdout = %q, want %q", got, tc.wantOut)
			}
			if got := stderr.String(); got != tc.wantErr {
				t.Errorf("stderr = %q, want %q", got, tc.wantErr)
			}
		})
	}
}

func TestRunResult(t *testing.T) {
	tests := []struct {
		name        string
		phases      []*runv1.Phase
		projectRoot string
		wantOutcome eventv1.Outcome
		wantCode    int
		wantReason  string
		wantStdout  string
	}{
		{
			name:        "no phases",
			wantOutcome: eventv1.Outcome_OUTCOME_FINISHED,
			wantCode:    -1,
			wantReason:  "no phase has commands",
		},
		{
			name:        "failure stops the later phases",
			phases:      []*runv1.Phase{phase("init", "echo init"), phase("plan", "echo plan", "exit 3", "echo not-reached"), phase("apply", "echo apply")},
			wantOutcome: eventv1.Outcome_OUTCOME_FAILED,
			wantCode:    3,
			wantReason:  "phase plan exited with code 3",
			wantStdout:  "init\nplan\n",
		},
		{
			name:        "failing before hook skips the commands",
			phases:      []*runv1.Phase{{Name: "init", Before: []string{"false"}, Commands: []string{"echo init"}}},
			wantOutcome: eventv1.Outcome_OUTCOME_FAILED,
			wantCode:    1,
			wantReason:  "phase init exited with code 1",
		},
		{
			name:        "killed by a signal",
			phases:      []*runv1.Phase{phase("perform", "kill -9 $$")},
			wantOutcome: eventv1.Outcome_OUTCOME_FAILED,
			wantCode:    137,
			wantReason:  "phase perform killed by signal 9 (killed)",
		},
		{
			name:        "project root runs in the sub-directory",
			phases:      []*runv1.Phase{phase("init", `basename "$(pwd)"`)},
			projectRoot: "infra/prod",
			wantOutcome: eventv1.Outcome_OUTCOME_FINISHED,
			wantCode:    0,
			wantStdout:  "prod\n",
		},
		{
			name:        "project root escaping the workspace",
			phases:      []*runv1.Phase{phase("init", "echo escaped")},
			projectRoot: "../x",
			wantOutcome: eventv1.Outcome_OUTCOME_FAILED,
			wantCode:    -1,
			wantReason:  `project_root "../x" is not a path inside the workspace`,
		},
		{
			name:        "absolute project root",
			phases:      []*runv1.Phase{phase("init", "echo escaped")},
			projectRoot: "/etc",
			wantOutcome: eventv1.Outcome_OUTCOME_FAILED,
			wantCode:    -1,
			wantReason:  `project_root "/etc" is not a path inside the workspace`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, stdout, _ := newJob(t, tt.phases...)
			job.Spec.Source = &runv1.Source{ProjectRoot: tt.projectRoot}
			if err := os.MkdirAll(filepath.Join(job.Workspace, "infra", "prod"), 0o755); err != nil {
				t.Fatal(err)
			}
			res := supervise.Run(context.Background(), Runtime{}, job, supervise.Limits{})
			if res.Outcome != tt.wantOutcome || res.ExitCode != tt.wantCode || res.Reason != tt.wantReason {
				t.Errorf("result = %+v, want %v, %d, %q", res, tt.wantOutcome, tt.wantCode, tt.wantReason)
			}
			if got := withoutTraces(stdout.String()); got != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", got, tt.wantStdout)
			}
		})
	}
}

func TestRunMissingProjectRoot(t *testing.T) {
	job, _, _ := newJob(t, phase("init", "true"))
	job.Spec.Source = &runv1.Source{ProjectRoot: "missing"}
	res := supervise.Run(context.Background(), Runtime{}, job, supervise.Limits{})
	if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(res.Reason, "project root") {
		t.Errorf("result = %+v, want FAILED naming the project root", res)
	}
}

func TestRunEnvironment(t *testing.T) {
	t.Setenv("HANGAR_EXECUTOR_SECRET", "must-not-leak")
	tests := []struct {
		name string
		env  []string
		want []string
	}{
		{
			name: "executor PATH added when the job has none",
			env:  []string{"FOO=bar", "EMPTY="},
			want: []string{"EMPTY=", "FOO=bar", "PATH=" + os.Getenv("PATH")},
		},
		{
			name: "job PATH kept",
			env:  []string{"PATH=/usr/bin:/bin", "TF_VAR_x=1"},
			want: []string{"PATH=/usr/bin:/bin", "TF_VAR_x=1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, stdout, _ := newJob(t, phase("init", "env"))
			job.Env = tt.env
			res := supervise.Run(context.Background(), Runtime{}, job, supervise.Limits{})
			if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED {
				t.Fatalf("result = %+v", res)
			}
			var got []string
			for _, kv := range strings.Split(strings.TrimSpace(withoutTraces(stdout.String())), "\n") {
				if !strings.HasPrefix(kv, "PWD=") { // set by the shell itself
					got = append(got, kv)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("environment = %q, want %q", got, tt.want)
			}
		})
	}
}

// groupMembers returns the pids of the live (non-zombie) processes of a group.
func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		state, pgrp, ok := parseStat(string(stat))
		if ok && pgrp == pgid && state != "Z" && state != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pgidFrom reads the "pgid=N" line the test scripts print.
func pgidFrom(t *testing.T, out string) int {
	t.Helper()
	_, rest, _ := strings.Cut(withoutTraces(out), "pgid=")
	line, _, _ := strings.Cut(rest, "\n")
	pgid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("no pgid in %q", out)
	}
	return pgid
}

func TestRunStop(t *testing.T) {
	tests := []struct {
		name      string
		commands  []string
		grace     time.Duration
		wantCode  int
		wantOut   string // must appear in stdout after the stop
		maxPeriod time.Duration
	}{
		{
			// The group (shell, background and foreground sleep) dies on SIGTERM,
			// so Run returns long before the grace period ends.
			name:      "cancel kills the process tree",
			commands:  []string{"sleep 300 &", "echo pgid=$$", "sleep 300"},
			grace:     60 * time.Second,
			wantCode:  128 + 15,
			maxPeriod: 30 * time.Second,
		},
		{
			// The trap takes a while: a kill without grace would cut it short.
			name:      "grace lets a TERM trap run",
			commands:  []string{"trap 'sleep 0.5; echo got TERM; exit 0' TERM", "echo pgid=$$", "sleep 300 & wait"},
			grace:     60 * time.Second,
			wantCode:  0,
			wantOut:   "got TERM\n",
			maxPeriod: 30 * time.Second,
		},
		{
			// TERM is ignored by the shell and (inherited) by sleep: only the
			// SIGKILL after the grace period ends them.
			name:      "kill after the grace period",
			commands:  []string{"trap '' TERM", "echo pgid=$$", "sleep 300"},
			grace:     300 * time.Millisecond,
			wantCode:  128 + 9,
			maxPeriod: 30 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, stdout, _ := newJob(t, phase("plan", tt.commands...), phase("apply", "echo apply"))
			job.StopGrace = tt.grace
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			done := make(chan runner.Result, 1)
			go func() { done <- supervise.Run(ctx, Runtime{}, job, supervise.Limits{}) }()

			pgid := pgidFrom(t, stdout.waitFor(t, "\npgid="))
			time.Sleep(100 * time.Millisecond) // let the script reach its sleep
			start := time.Now()
			cancel(runner.ErrCancelled)
			var res runner.Result
			select {
			case res = <-done:
			case <-time.After(tt.maxPeriod):
				t.Fatalf("Run did not return within %v of the cancel", tt.maxPeriod)
			}
			t.Logf("stopped in %v", time.Since(start))
			if res.Outcome != eventv1.Outcome_OUTCOME_STOPPED || res.ExitCode != tt.wantCode {
				t.Errorf("result = %+v, want STOPPED, exit %d", res, tt.wantCode)
			}
			if !strings.Contains(res.Reason, "run cancelled") {
				t.Errorf("reason %q does not name the cause", res.Reason)
			}
			if pids := groupMembers(t, pgid); len(pids) > 0 {
				t.Errorf("processes %v of group %d still run after Run returned", pids, pgid)
			}
			out := withoutTraces(stdout.String())
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out, tt.wantOut)
			}
			if strings.Contains(out, "apply") {
				t.Errorf("a phase ran after the stop: %q", out)
			}
		})
	}
}

func TestRunKillsLeftoversAtPhaseEnd(t *testing.T) {
	// The background sleep holds stdout; the phase still ends when the shell
	// exits, and the sleep is killed before the next phase.
	job, stdout, _ := newJob(t, phase("init", "echo pgid=$$", "sleep 300 &"), phase("plan", "echo plan"))
	done := make(chan runner.Result, 1)
	go func() { done <- supervise.Run(context.Background(), Runtime{}, job, supervise.Limits{}) }()
	var res runner.Result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run waited for the background process")
	}
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED {
		t.Fatalf("result = %+v", res)
	}
	out := withoutTraces(stdout.String())
	if pids := groupMembers(t, pgidFrom(t, out)); len(pids) > 0 {
		t.Errorf("leftover processes %v", pids)
	}
	if !strings.HasSuffix(out, "plan\n") {
		t.Errorf("stdout = %q, want the plan phase to run", out)
	}
}

func TestRunCancelledBeforeStart(t *testing.T) {
	job, stdout, _ := newJob(t, phase("init", "echo init"))
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(runner.ErrLeaseLost)
	res := supervise.Run(ctx, Runtime{}, job, supervise.Limits{})
	// The phase loop's outcome comes from the cause, whatever the runtime.
	if res.Outcome != eventv1.Outcome_OUTCOME_LOST || res.ExitCode != -1 {
		t.Errorf("result = %+v, want LOST, exit -1", res)
	}
	if stdout.String() != "" {
		t.Errorf("a phase ran: %q", stdout.String())
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		stat      string
		wantState string
		wantPgrp  int
		wantOK    bool
	}{
		{"123 (sleep) S 1 456 456 0", "S", 456, true},
		{"123 (a) b (c)) Z 1 77 77 0", "Z", 77, true},
		{"garbage", "", 0, false},
		{"1 (x) R 0", "", 0, false},
	}
	for _, tt := range tests {
		state, pgrp, ok := parseStat(tt.stat)
		if state != tt.wantState || pgrp != tt.wantPgrp || ok != tt.wantOK {
			t.Errorf("parseStat(%q) = %q, %d, %v; want %q, %d, %v", tt.stat, state, pgrp, ok, tt.wantState, tt.wantPgrp, tt.wantOK)
		}
	}
}
