// Package supervise runs a job on a runtime under the run timeout and the
// no-output (logs) timeout, and turns the reason the job's context ended into
// the run's Result.
//
// The runtime only sees a context that ends with a cause: runner.ErrRunTimeout,
// runner.ErrLogsTimeout, or the cause of the parent context, which callers end
// with context.WithCancelCause and runner.ErrCancelled or runner.ErrLeaseLost
// (wrapping them is fine: "by operator alice: %w"). The runtime then stops the
// job (signal, grace, kill) and returns; Run sets Outcome and Reason from the
// cause.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// Limits are the pool's timeouts of a run. Zero disables a limit.
type Limits struct {
	// RunTimeout is the longest a run may take (HANGAR_RUN_TIMEOUT, default 70m).
	RunTimeout time.Duration
	// LogsTimeout is the longest a run may go without writing to stdout or
	// stderr (HANGAR_LOGS_TIMEOUT, default 7m).
	LogsTimeout time.Duration
}

// ForSpec returns the limits that apply to a run: the spec's timeout_seconds and
// logs_timeout_seconds replace the pool's value only when they are shorter (a
// run may shorten its limits, never lengthen them); 0 keeps the pool's value.
func (l Limits) ForSpec(spec *runv1.RunSpec) Limits {
	return Limits{
		RunTimeout:  shorter(l.RunTimeout, spec.GetTimeoutSeconds()),
		LogsTimeout: shorter(l.LogsTimeout, spec.GetLogsTimeoutSeconds()),
	}
}

func shorter(pool time.Duration, specSeconds uint32) time.Duration {
	if specSeconds == 0 {
		return pool
	}
	d := time.Duration(specSeconds) * time.Second
	if pool == 0 || d < pool {
		return d
	}
	return pool
}

// Run runs job on rt under lim.ForSpec(job.Spec) and returns its Result:
//
//   - parent context ended with runner.ErrCancelled: OUTCOME_STOPPED,
//     "cancelled: <cause>";
//   - parent context ended with runner.ErrLeaseLost: OUTCOME_LOST, "lease lost";
//   - the run timeout passed: OUTCOME_TIMED_OUT, "run timeout of 70m0s exceeded";
//   - nothing was written to stdout or stderr for the logs timeout:
//     OUTCOME_TIMED_OUT, "no output for 7m0s: killed";
//   - the parent context ended with another cause (a plain cancel, a deadline):
//     OUTCOME_STOPPED, "stopped: <cause>";
//   - the context did not end: the runtime's own Result.
//
// The exit code is always the runtime's. The first cause wins: a run cancelled
// after its run timeout fired is reported as timed out. Run does not change job;
// the runtime gets a copy whose Stdout and Stderr pass every write through
// unchanged and note it as output activity. A nil writer stays a sink whose
// writes still count as activity.
func Run(ctx context.Context, rt runner.Runtime, job *runner.Job, lim Limits) runner.Result {
	lim = lim.ForSpec(job.Spec)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	stopRunTimer := func() bool { return false }
	if lim.RunTimeout > 0 {
		stopRunTimer = time.AfterFunc(lim.RunTimeout, func() { cancel(runner.ErrRunTimeout) }).Stop
	}
	act := newActivity(lim.LogsTimeout, func() { cancel(runner.ErrLogsTimeout) })

	j := *job
	j.Stdout = activityWriter{w: orDiscard(job.Stdout), act: act}
	j.Stderr = activityWriter{w: orDiscard(job.Stderr), act: act}
	res := rt.Run(ctx, &j)

	// A limit passing after the runtime returned does not change the result.
	stopRunTimer()
	act.stop()
	if ctx.Err() == nil {
		return res
	}
	return FromCause(res, context.Cause(ctx), lim)
}

// FromCause sets the Outcome and Reason of a runtime's Result from the cause of
// the job's context.
func FromCause(res runner.Result, cause error, lim Limits) runner.Result {
	switch {
	case cause == nil:
		return res
	case errors.Is(cause, runner.ErrLeaseLost):
		res.Outcome = eventv1.Outcome_OUTCOME_LOST
		res.Reason = cause.Error()
	case errors.Is(cause, runner.ErrCancelled):
		res.Outcome = eventv1.Outcome_OUTCOME_STOPPED
		res.Reason = "cancelled: " + cause.Error()
	case errors.Is(cause, runner.ErrRunTimeout):
		res.Outcome = eventv1.Outcome_OUTCOME_TIMED_OUT
		res.Reason = fmt.Sprintf("run timeout of %v exceeded", lim.RunTimeout)
	case errors.Is(cause, runner.ErrLogsTimeout):
		res.Outcome = eventv1.Outcome_OUTCOME_TIMED_OUT
		res.Reason = fmt.Sprintf("no output for %v: killed", lim.LogsTimeout)
	default:
		res.Outcome = eventv1.Outcome_OUTCOME_STOPPED
		res.Reason = "stopped: " + cause.Error()
	}
	return res
}

// activity fires once no write has been noted for timeout. A zero timeout never
// fires. After stop, writes (from processes still flushing) re-arm nothing.
type activity struct {
	timeout time.Duration
	mu      sync.Mutex
	timer   *time.Timer // nil when there is no logs timeout or after stop
}

func newActivity(timeout time.Duration, fire func()) *activity {
	a := &activity{timeout: timeout}
	if timeout > 0 {
		a.timer = time.AfterFunc(timeout, fire)
	}
	return a
}

// wrote notes output: the no-output timeout starts again.
func (a *activity) wrote() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timer != nil {
		a.timer.Reset(a.timeout)
	}
}

func (a *activity) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
}

// activityWriter passes writes through to w and notes each non-empty one.
type activityWriter struct {
	w   io.Writer
	act *activity
}

func (aw activityWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		aw.act.wrote()
	}
	return aw.w.Write(p)
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
