package supervise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/processrt"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// output is a writer for both of the runtime's writer goroutines that tells
// when a string has appeared.
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

func (o *output) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(o.String(), s) {
		select {
		case <-o.changed:
		case <-deadline:
			t.Errorf("output never contained %q; got %q", s, o.String())
			return
		}
	}
}

// slowBound is far above every limit the tests set and far below the 30 s the
// test processes would otherwise sleep.
const slowBound = 20 * time.Second

func TestRunWithProcesses(t *testing.T) {
	const printEvery200ms = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo tick $i; sleep 0.2; done"
	tests := []struct {
		name     string
		commands []string
		lim      Limits
		spec     func(*runv1.RunSpec)
		// cancelCause, when set, ends the parent context once "ready" is printed.
		cancelCause error
		wantOutcome eventv1.Outcome
		wantCode    int
		wantReason  string
	}{
		{
			name:        "finished",
			commands:    []string{"echo hi"},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: time.Hour},
			wantOutcome: eventv1.Outcome_OUTCOME_FINISHED,
			wantCode:    0,
		},
		{
			name:        "failed keeps the runtime's result",
			commands:    []string{"exit 3"},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: time.Hour},
			wantOutcome: eventv1.Outcome_OUTCOME_FAILED,
			wantCode:    3,
			wantReason:  "phase plan exited with code 3",
		},
		{
			name:        "run timeout",
			commands:    []string{"sleep 30"},
			lim:         Limits{RunTimeout: 300 * time.Millisecond, LogsTimeout: time.Hour},
			wantOutcome: eventv1.Outcome_OUTCOME_TIMED_OUT,
			wantCode:    143,
			wantReason:  "run timeout of 300ms exceeded",
		},
		{
			name:        "run timeout although output goes on",
			commands:    []string{"while :; do echo busy; sleep 0.05; done"},
			lim:         Limits{RunTimeout: 500 * time.Millisecond, LogsTimeout: time.Hour},
			wantOutcome: eventv1.Outcome_OUTCOME_TIMED_OUT,
			wantCode:    143,
			wantReason:  "run timeout of 500ms exceeded",
		},
		{
			name:        "logs timeout",
			commands:    []string{"echo starting", "sleep 30"},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: 300 * time.Millisecond},
			wantOutcome: eventv1.Outcome_OUTCOME_TIMED_OUT,
			wantCode:    143,
			wantReason:  "no output for 300ms: killed",
		},
		{
			// 3 s of run with a line every 0.2 s: ten times under the limit.
			name:        "stdout output keeps the logs timeout away",
			commands:    []string{printEvery200ms},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: 2 * time.Second},
			wantOutcome: eventv1.Outcome_OUTCOME_FINISHED,
			wantCode:    0,
		},
		{
			name:        "stderr output keeps the logs timeout away",
			commands:    []string{"(" + printEvery200ms + ") >&2"},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: 2 * time.Second},
			wantOutcome: eventv1.Outcome_OUTCOME_FINISHED,
			wantCode:    0,
		},
		{
			name:        "spec shortens the logs timeout",
			commands:    []string{"sleep 30"},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: time.Hour},
			spec:        func(s *runv1.RunSpec) { s.LogsTimeoutSeconds = 1 },
			wantOutcome: eventv1.Outcome_OUTCOME_TIMED_OUT,
			wantCode:    143,
			wantReason:  "no output for 1s: killed",
		},
		{
			name:        "spec shortens the run timeout",
			commands:    []string{"sleep 30"},
			lim:         Limits{RunTimeout: time.Hour},
			spec:        func(s *runv1.RunSpec) { s.TimeoutSeconds = 1 },
			wantOutcome: eventv1.Outcome_OUTCOME_TIMED_OUT,
			wantCode:    143,
			wantReason:  "run timeout of 1s exceeded",
		},
		{
			name:        "cancelled",
			commands:    []string{"echo ready", "sleep 30"},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: time.Hour},
			cancelCause: runner.ErrCancelled,
			wantOutcome: eventv1.Outcome_OUTCOME_STOPPED,
			wantCode:    143,
			wantReason:  "cancelled: run cancelled",
		},
		{
			name:        "cancelled with a wrapped cause",
			commands:    []string{"echo ready", "sleep 30"},
			cancelCause: fmt.Errorf("by operator alice: %w", runner.ErrCancelled),
			wantOutcome: eventv1.Outcome_OUTCOME_STOPPED,
			wantCode:    143,
			wantReason:  "cancelled: by operator alice: run cancelled",
		},
		{
			name:        "lease lost",
			commands:    []string{"echo ready", "sleep 30"},
			lim:         Limits{RunTimeout: time.Hour, LogsTimeout: time.Hour},
			cancelCause: runner.ErrLeaseLost,
			wantOutcome: eventv1.Outcome_OUTCOME_LOST,
			wantCode:    143,
			wantReason:  "lease lost",
		},
		{
			name:        "parent cancelled without a cause",
			commands:    []string{"echo ready", "sleep 30"},
			cancelCause: context.Canceled,
			wantOutcome: eventv1.Outcome_OUTCOME_STOPPED,
			wantCode:    143,
			wantReason:  "stopped: context canceled",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr := newOutput(), newOutput()
			spec := &runv1.RunSpec{Phases: []*runv1.Phase{{Name: "plan", Commands: tt.commands}}}
			if tt.spec != nil {
				tt.spec(spec)
			}
			job := &runner.Job{
				RunID:     "run-1",
				Spec:      spec,
				Workspace: t.TempDir(),
				Stdout:    stdout,
				Stderr:    stderr,
				StopGrace: 5 * time.Second,
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tt.cancelCause != nil {
				go func() {
					stdout.waitFor(t, "ready")
					cancel(tt.cancelCause)
				}()
			}

			start := time.Now()
			res := Run(ctx, processrt.Runtime{}, job, tt.lim)
			took := time.Since(start)

			if res.Outcome != tt.wantOutcome || res.ExitCode != tt.wantCode || res.Reason != tt.wantReason {
				t.Errorf("result = %+v, want %v, %d, %q", res, tt.wantOutcome, tt.wantCode, tt.wantReason)
			}
			if took > slowBound {
				t.Errorf("Run took %v, want well under %v", took, slowBound)
			}
			if job.Stdout != stdout || job.Stderr != stderr {
				t.Error("Run changed the caller's job")
			}
		})
	}
}

// phaseFunc is a tiny in-package runtime whose every phase is the function.
type phaseFunc func(ctx context.Context, out runner.Output) (runner.Exit, error)

func (f phaseFunc) Open(*runner.Job) (runner.Session, error) { return funcSession{f}, nil }

type funcSession struct{ f phaseFunc }

func (funcSession) Prepare(context.Context) error { return nil }
func (s funcSession) RunPhase(ctx context.Context, _ int, _ *runv1.Phase, out runner.Output) (runner.Exit, error) {
	return s.f(ctx, out)
}
func (funcSession) Export(context.Context, io.Writer) error { return errors.New("no export") }
func (funcSession) Close()                                  {}

// onePhase is a spec with one phase to run.
func onePhase() *runv1.RunSpec {
	return &runv1.RunSpec{Phases: []*runv1.Phase{{Name: "plan", Commands: []string{"x"}}}}
}

func TestRunPassesOutputThrough(t *testing.T) {
	var stdout, stderr bytes.Buffer
	job := &runner.Job{Spec: onePhase(), Stdout: &stdout, Stderr: &stderr}
	rt := phaseFunc(func(ctx context.Context, out runner.Output) (runner.Exit, error) {
		for _, chunk := range []string{"a", "", "bc\n", "\x00\xff"} {
			n, err := out.Stdout.Write([]byte(chunk))
			if n != len(chunk) || err != nil {
				t.Errorf("stdout write = %d, %v", n, err)
			}
		}
		_, _ = out.Stderr.Write([]byte("err\n"))
		return runner.Exit{Code: 2}, nil
	})
	res := Run(context.Background(), rt, job, Limits{RunTimeout: time.Hour, LogsTimeout: time.Hour})
	want := runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: 2, Reason: "phase plan exited with code 2"}
	if res != want {
		t.Errorf("result = %+v, want %+v", res, want)
	}
	if got := stdout.String(); got != "abc\n\x00\xff" {
		t.Errorf("stdout = %q", got)
	}
	if got := stderr.String(); got != "err\n" {
		t.Errorf("stderr = %q", got)
	}
}

// TestRunRuntimeTimeout: a session error wrapping runner.ErrRunTimeout (a
// pod past its activeDeadlineSeconds) is a timed-out run, with the error as
// reason; other session errors are failures.
func TestRunRuntimeTimeout(t *testing.T) {
	for _, tc := range []struct {
		err     error
		outcome eventv1.Outcome
	}{
		{fmt.Errorf("the pod ran past its deadline: %w", runner.ErrRunTimeout), eventv1.Outcome_OUTCOME_TIMED_OUT},
		{errors.New("the pod was evicted"), eventv1.Outcome_OUTCOME_FAILED},
	} {
		rt := phaseFunc(func(ctx context.Context, out runner.Output) (runner.Exit, error) {
			return runner.Exit{Code: -1}, tc.err
		})
		res := Run(context.Background(), rt, &runner.Job{Spec: onePhase()}, Limits{})
		want := runner.Result{Outcome: tc.outcome, ExitCode: -1, Reason: "phase plan: " + tc.err.Error()}
		if res != want {
			t.Errorf("result = %+v, want %+v", res, want)
		}
	}
}

func TestRunNilWritersAndNoLimits(t *testing.T) {
	job := &runner.Job{Spec: onePhase()}
	rt := phaseFunc(func(ctx context.Context, out runner.Output) (runner.Exit, error) {
		if _, err := out.Stdout.Write([]byte("x")); err != nil {
			t.Errorf("write to nil stdout: %v", err)
		}
		if _, err := out.Stderr.Write([]byte("x")); err != nil {
			t.Errorf("write to nil stderr: %v", err)
		}
		if ctx.Err() != nil {
			t.Errorf("context ended with no limits: %v", context.Cause(ctx))
		}
		return runner.Exit{Code: 0}, nil
	})
	if res := Run(context.Background(), rt, job, Limits{}); res.Outcome != eventv1.Outcome_OUTCOME_FINISHED {
		t.Errorf("result = %+v", res)
	}
}

// TestRunLogsTimeoutOnlyCountsOutput: a phase that writes nothing (empty
// writes) and returns only when its context ends is stopped by the logs
// timeout.
func TestRunLogsTimeoutOnlyCountsOutput(t *testing.T) {
	job := &runner.Job{Spec: onePhase(), OnPhase: func(string) {}}
	rt := phaseFunc(func(ctx context.Context, out runner.Output) (runner.Exit, error) {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return runner.Exit{Code: 137, Stopped: true}, nil
			case <-tick.C:
				_, _ = out.Stdout.Write(nil)
			}
		}
	})
	res := Run(context.Background(), rt, job, Limits{LogsTimeout: 200 * time.Millisecond})
	want := runner.Result{Outcome: eventv1.Outcome_OUTCOME_TIMED_OUT, ExitCode: 137, Reason: "no output for 200ms: killed"}
	if res != want {
		t.Errorf("result = %+v, want %+v", res, want)
	}
}

func TestFromCause(t *testing.T) {
	lim := Limits{RunTimeout: 70 * time.Minute, LogsTimeout: 7 * time.Minute}
	runtimeRes := runner.Result{Outcome: eventv1.Outcome_OUTCOME_FINISHED, ExitCode: 0, Reason: "own"}
	tests := []struct {
		name        string
		cause       error
		wantOutcome eventv1.Outcome
		wantReason  string
	}{
		{"no cause", nil, eventv1.Outcome_OUTCOME_FINISHED, "own"},
		{"cancelled", runner.ErrCancelled, eventv1.Outcome_OUTCOME_STOPPED, "cancelled: run cancelled"},
		{"run timeout", runner.ErrRunTimeout, eventv1.Outcome_OUTCOME_TIMED_OUT, "run timeout of 1h10m0s exceeded"},
		{"logs timeout", runner.ErrLogsTimeout, eventv1.Outcome_OUTCOME_TIMED_OUT, "no output for 7m0s: killed"},
		{"lease lost", runner.ErrLeaseLost, eventv1.Outcome_OUTCOME_LOST, "lease lost"},
		{"wrapped lease lost", fmt.Errorf("gateway gone: %w", runner.ErrLeaseLost), eventv1.Outcome_OUTCOME_LOST, "gateway gone: lease lost"},
		{"deadline", context.DeadlineExceeded, eventv1.Outcome_OUTCOME_STOPPED, "stopped: context deadline exceeded"},
		{"other", errors.New("executor shutting down"), eventv1.Outcome_OUTCOME_STOPPED, "stopped: executor shutting down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := FromCause(runtimeRes, tt.cause, lim)
			if res.Outcome != tt.wantOutcome || res.Reason != tt.wantReason || res.ExitCode != 0 {
				t.Errorf("FromCause(%v) = %+v, want %v %q", tt.cause, res, tt.wantOutcome, tt.wantReason)
			}
		})
	}
}

func TestLimitsForSpec(t *testing.T) {
	pool := Limits{RunTimeout: 70 * time.Minute, LogsTimeout: 7 * time.Minute}
	tests := []struct {
		name        string
		pool        Limits
		timeout     uint32
		logsTimeout uint32
		want        Limits
	}{
		{"zero keeps the pool's", pool, 0, 0, pool},
		{"shorter wins", pool, 600, 60, Limits{RunTimeout: 10 * time.Minute, LogsTimeout: time.Minute}},
		{"longer is ignored", pool, 100000, 100000, pool},
		{"no pool limit", Limits{}, 30, 0, Limits{RunTimeout: 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &runv1.RunSpec{TimeoutSeconds: tt.timeout, LogsTimeoutSeconds: tt.logsTimeout}
			if got := tt.pool.ForSpec(spec); got != tt.want {
				t.Errorf("ForSpec = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLimitsNotes(t *testing.T) {
	pool := Limits{RunTimeout: 10 * time.Minute, LogsTimeout: 2 * time.Minute}
	for _, tt := range []struct {
		name                 string
		pool                 Limits
		timeout, logsTimeout uint32
		want                 []string
	}{
		{"nothing asked", pool, 0, 0, nil},
		{"shorter: no note", pool, 60, 60, nil},
		{"no pool limit: no note", Limits{}, 7200, 0, nil},
		{"longer run timeout", pool, 3600, 0, []string{"[hangar] the run asks for a run timeout of 1h0m0s; the pool's limit of 10m0s applies (HANGAR_RUN_TIMEOUT of the executor)"}},
		{"both longer", pool, 3600, 600, []string{
			"[hangar] the run asks for a run timeout of 1h0m0s; the pool's limit of 10m0s applies (HANGAR_RUN_TIMEOUT of the executor)",
			"[hangar] the run asks for a logs timeout of 10m0s; the pool's limit of 2m0s applies (HANGAR_LOGS_TIMEOUT of the executor)",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.pool.Notes(&runv1.RunSpec{TimeoutSeconds: tt.timeout, LogsTimeoutSeconds: tt.logsTimeout})
			if !slices.Equal(got, tt.want) {
				t.Errorf("Notes = %q, want %q", got, tt.want)
			}
		})
	}
}

// closeSession records when it is closed.
type closeSession struct {
	funcSession
	closed func()
}

func (s closeSession) Close() { s.closed() }

type closeRuntime struct {
	f      phaseFunc
	closed func()
}

func (r closeRuntime) Open(*runner.Job) (runner.Session, error) {
	return closeSession{funcSession{r.f}, r.closed}, nil
}

// TestRunEndedBeforeTeardown: Job.Ended hears of the final result (the
// cause's, for a run timeout) before the session is torn down, and Run
// returns only after the teardown.
func TestRunEndedBeforeTeardown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    int
		timeout time.Duration
		want    eventv1.Outcome
	}{
		{"finished", 0, 0, eventv1.Outcome_OUTCOME_FINISHED},
		{"failed", 3, 0, eventv1.Outcome_OUTCOME_FAILED},
		{"timed out", 0, 50 * time.Millisecond, eventv1.Outcome_OUTCOME_TIMED_OUT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var events []string
			note := func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }
			rt := closeRuntime{f: func(ctx context.Context, _ runner.Output) (runner.Exit, error) {
				if tc.timeout > 0 {
					<-ctx.Done()
					return runner.Exit{Code: 143, Stopped: true}, nil
				}
				return runner.Exit{Code: tc.code}, nil
			}, closed: func() { note("closed") }}
			var ended runner.Result
			job := &runner.Job{RunID: "run-1", Spec: onePhase(), Ended: func(r runner.Result) { ended = r; note("ended") }}
			res := Run(context.Background(), rt, job, Limits{RunTimeout: tc.timeout})
			note("returned")
			if res.Outcome != tc.want || ended != res {
				t.Errorf("Run = %+v, Ended got %+v; want outcome %v in both", res, ended, tc.want)
			}
			if want := []string{"ended", "closed", "returned"}; !slices.Equal(events, want) {
				t.Errorf("order %v, want %v", events, want)
			}
		})
	}
}
