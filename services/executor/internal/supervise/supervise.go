// Package supervise is the executor's phase loop, above every runtime: it runs
// a job's phases one by one in a runtime session (runner.Session) under the
// run timeout and the no-output (logs) timeout, and turns how they ended, or
// the reason the job's context ended, into the run's Result.
//
// The session only sees a context that ends with a cause: runner.ErrRunTimeout,
// runner.ErrLogsTimeout, or the cause of the parent context, which callers end
// with context.WithCancelCause and runner.ErrCancelled or runner.ErrLeaseLost
// (wrapping them is fine: "by operator alice: %w"). The runtime then stops the
// job (signal, grace, kill) and returns; Run sets Outcome and Reason from the
// cause.
//
// The session is torn down (containers and volume removed) after the result
// is known: Job.Ended hears of the result first, so that what follows a run
// (closing its log) overlaps the teardown.
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
	"github.com/hangar-dev/hangar/services/executor/internal/wsarchive"
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

// Notes says, for the run's log, which of the spec's limits the pool's
// shorter ones override: a run asking for more time than the pool allows is
// not clamped without a word.
func (l Limits) Notes(spec *runv1.RunSpec) []string {
	var out []string
	for _, c := range []struct {
		what, env string
		pool      time.Duration
		asked     uint32
	}{
		{"run timeout", "HANGAR_RUN_TIMEOUT", l.RunTimeout, spec.GetTimeoutSeconds()},
		{"logs timeout", "HANGAR_LOGS_TIMEOUT", l.LogsTimeout, spec.GetLogsTimeoutSeconds()},
	} {
		asked := time.Duration(c.asked) * time.Second
		if c.asked != 0 && c.pool != 0 && asked > c.pool {
			out = append(out, fmt.Sprintf("[hangar] the run asks for a %s of %s; the pool's limit of %s applies (%s of the executor)", c.what, asked, c.pool, c.env))
		}
	}
	return out
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

// Run is the executor's one phase loop, shared by every runtime: it opens a
// session of rt for job, prepares it, runs the selected phases in order
// (runner.Selected), calling job.OnPhase before each, exports the workspace to
// job.ExportTo when every phase exited 0, calls job.Ended with the result,
// and closes the session. It does so
// under lim.ForSpec(job.Spec) and returns the Result:
//
//   - every phase exited 0: OUTCOME_FINISHED with exit code 0 (-1 and "no
//     phase has commands" when there was none: the export is then the host
//     workspace as prepared);
//   - a phase exited non-zero: OUTCOME_FAILED, "phase plan exited with code
//     3", and the later phases do not run; a phase killed by a signal: "phase
//     plan killed by signal 9 (killed)" with 128+signal as exit code;
//   - nothing could be prepared or started, or the export failed:
//     OUTCOME_FAILED with the error as reason (OUTCOME_TIMED_OUT when the
//     error of Prepare or RunPhase wraps runner.ErrRunTimeout: the runtime
//     ended the run for its time);
//   - the job's context ended: by the cause, see FromCause (parent context
//     ended with runner.ErrCancelled: OUTCOME_STOPPED, "cancelled: <cause>";
//     runner.ErrLeaseLost: OUTCOME_LOST; the run timeout: OUTCOME_TIMED_OUT,
//     "run timeout of 70m0s exceeded"; no output for the logs timeout:
//     OUTCOME_TIMED_OUT, "no output for 7m0s: killed"; another cause:
//     OUTCOME_STOPPED, "stopped: <cause>").
//
// The exit code is always the one of the last phase that ran. The first cause
// wins: a run cancelled after its run timeout fired is reported as timed out.
// Run does not change job; the session gets writers that pass every write
// through unchanged and note it as output activity. A nil writer stays a sink
// whose writes still count as activity.
func Run(ctx context.Context, rt runner.Runtime, job *runner.Job, lim Limits) runner.Result {
	if job.Stderr != nil {
		for _, n := range lim.Notes(job.Spec) {
			_, _ = fmt.Fprintln(job.Stderr, n)
		}
	}
	lim = lim.ForSpec(job.Spec)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	stopRunTimer := func() bool { return false }
	if lim.RunTimeout > 0 {
		stopRunTimer = time.AfterFunc(lim.RunTimeout, func() { cancel(runner.ErrRunTimeout) }).Stop
	}
	act := newActivity(lim.LogsTimeout, func() { cancel(runner.ErrLogsTimeout) })

	var sess runner.Session
	res := loop(ctx, rt, job, act, &sess)

	// A limit passing after the loop returned does not change the result,
	// nor does one passing while the session is torn down.
	stopRunTimer()
	act.stop()
	if ctx.Err() != nil {
		res = FromCause(res, context.Cause(ctx), lim)
	}
	if job.Ended != nil {
		job.Ended(res)
	}
	if sess != nil {
		sess.Close()
	}
	return res
}

// loop runs the phases; the session it opened is left in *opened for Run to
// close once the result is known.
func loop(ctx context.Context, rt runner.Runtime, job *runner.Job, act *activity, opened *runner.Session) runner.Result {
	phases := runner.Selected(job)
	if len(phases) == 0 {
		if job.ExportTo != nil && job.Workspace != "" {
			if err := wsarchive.Write(job.ExportTo, job.Workspace); err != nil {
				return failed(-1, err.Error())
			}
		}
		return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FINISHED, ExitCode: -1, Reason: "no phase has commands"}
	}
	sess, err := rt.Open(job)
	if err != nil {
		return failed(-1, err.Error())
	}
	*opened = sess
	first := 0
	if job.Adopt != nil {
		first = job.Adopt.Phase
		if first < 0 || first >= len(phases) {
			return failed(-1, fmt.Sprintf("the adopted run has no phase %d", first))
		}
	} else if err := sess.Prepare(ctx); err != nil {
		if ctx.Err() != nil {
			return stopped(ctx, -1, "while preparing")
		}
		return failedBy(-1, err.Error(), err)
	}
	out := runner.Output{
		Stdout:  &countingWriter{w: activityWriter{w: orDiscard(job.Stdout), act: act}},
		Stderr:  nil,
		Durable: job.Durable,
	}
	counter := out.Stdout.(*countingWriter)
	out.Stderr = &countingWriter{w: activityWriter{w: orDiscard(job.Stderr), act: act}, shared: counter}
	if job.Adopt != nil {
		// What the earlier life of the executor had stored is not written
		// again.
		counter.setBase(job.Adopt.Stored)
	}
	exit := -1
	for i := first; i < len(phases); i++ {
		p := phases[i]
		if ctx.Err() != nil {
			return stopped(ctx, exit, "before phase "+p.GetName())
		}
		// A re-adopted phase was started (and reported) by the executor
		// process that died.
		if job.OnPhase != nil && (job.Adopt == nil || i != first) {
			job.OnPhase(p.GetName())
		}
		out.Base = counter.total()
		if job.Adopt != nil && i == first {
			out.Base = job.Adopt.Base
		} else if job.Checkpoint != nil {
			job.Checkpoint(i, out.Base)
		}
		st, err := sess.RunPhase(ctx, i, p, out)
		switch {
		case st.Stopped:
			return stopped(ctx, st.Code, "in phase "+p.GetName())
		case err != nil:
			if ctx.Err() != nil {
				return stopped(ctx, exit, "in phase "+p.GetName())
			}
			return failedBy(exit, fmt.Sprintf("phase %s: %v", p.GetName(), err), err)
		}
		exit = st.Code
		switch {
		case st.Signal != 0:
			return failed(st.Code, fmt.Sprintf("phase %s killed by signal %d (%v)", p.GetName(), int(st.Signal), st.Signal))
		case st.Code != 0:
			return failed(st.Code, fmt.Sprintf("phase %s exited with code %d", p.GetName(), st.Code))
		}
	}
	if job.ExportTo != nil {
		if err := sess.Export(ctx, job.ExportTo); err != nil {
			if ctx.Err() != nil {
				return stopped(ctx, exit, "after the last phase")
			}
			return failed(exit, err.Error())
		}
	}
	return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FINISHED, ExitCode: exit}
}

func failed(code int, reason string) runner.Result {
	return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: code, Reason: reason}
}

// failedBy is failed, or OUTCOME_TIMED_OUT when the session's error wraps
// runner.ErrRunTimeout: the runtime itself ended the run for its time (the
// Kubernetes runtime: the pod's activeDeadlineSeconds, which can pass while
// the executor was not there to stop the run at its timeout).
func failedBy(code int, reason string, err error) runner.Result {
	res := failed(code, reason)
	if errors.Is(err, runner.ErrRunTimeout) {
		res.Outcome = eventv1.Outcome_OUTCOME_TIMED_OUT
	}
	return res
}

// stopped is the result of a job whose context ended; Run then sets Outcome
// and Reason from the cause (FromCause).
func stopped(ctx context.Context, code int, where string) runner.Result {
	return runner.Result{
		Outcome:  eventv1.Outcome_OUTCOME_STOPPED,
		ExitCode: code,
		Reason:   fmt.Sprintf("stopped %s: %v", where, context.Cause(ctx)),
	}
}

// countingWriter counts the bytes written through it and its sibling (the
// job's output offset, see runner.Job.Durable).
type countingWriter struct {
	w      io.Writer
	shared *countingWriter // the counter of both writers; nil on the first
	mu     sync.Mutex
	n      uint64
}

func (c *countingWriter) owner() *countingWriter {
	if c.shared != nil {
		return c.shared
	}
	return c
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	o := c.owner()
	o.mu.Lock()
	o.n += uint64(n)
	o.mu.Unlock()
	return n, err
}

func (c *countingWriter) total() uint64 {
	o := c.owner()
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func (c *countingWriter) setBase(n uint64) {
	o := c.owner()
	o.mu.Lock()
	o.n = n
	o.mu.Unlock()
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
