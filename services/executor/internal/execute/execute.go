// Package execute carries one assigned run from start to end on this host:
// it opens the run's log stream to logship, prepares the workspace and fetches
// the source, runs the phases in the configured runtime under the run and
// no-output timeouts, closes the log, removes the workspace, and returns the
// run's final result with the key of its stored log. A tracked run that needs
// confirmation stops after "plan" and hands its workspace off, encrypted
// (package handoff); its resumption reads it back and runs the rest.
package execute

import (
	"cmp"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/runcred"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/services/executor/internal/handoff"
	"github.com/hangar-dev/hangar/services/executor/internal/logclient"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
	"github.com/hangar-dev/hangar/services/executor/internal/workspace"
)

// Config is what every run of this executor shares.
type Config struct {
	PoolID    string
	Runtime   runner.Runtime
	Logs      logclient.Client
	Workspace workspace.Options
	// WhitelistEnv and MaskEnv are NAME=VALUE of the executor's environment
	// passed to every run; MaskEnv values are also masked in logs.
	WhitelistEnv, MaskEnv []string
	Limits                supervise.Limits
	// State stores the workspaces of tracked runs waiting for confirmation
	// and reads them back when they resume; nil: such runs fail, naming
	// HANGAR_S3_BUCKET.
	State *handoff.Store
	// StateDir keeps, while a run goes on, what a later process of this
	// executor needs to re-adopt it (no variable value, no output); "":
	// runs cannot be re-adopted.
	StateDir   string
	StopGrace  time.Duration
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	Logger     *slog.Logger
}

// Executor implements worker.Executor.
type Executor struct{ cfg Config }

// New returns an Executor.
func New(cfg Config) *Executor { return &Executor{cfg: cfg} }

// Execute runs a to its end and returns its result. It is the worker.Executor
// of callers that cannot report a hand-off: a run that stops for
// confirmation is reported to them as failed. The worker uses ExecuteFinish.
func (e *Executor) Execute(ctx context.Context, a *workv1.Assign, phase func(string)) *eventv1.RunFinished {
	fin := e.ExecuteFinish(ctx, e.cfg.PoolID, a, phase)
	if fin.GetResult() != nil {
		return fin.GetResult()
	}
	return &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1, Reason: "the run stopped for confirmation, which this caller cannot report"}
}

// ExecuteFinish runs a to its end and returns the Finish to report, without
// lease id and epoch. poolID is the pool the gateway welcomed the executor
// into; it binds stored state to the pool. The Finish holds the run's Result, or, for a tracked run that needs
// confirmation and whose phases up to "plan" succeeded, Unconfirmed with the
// HandOff of its stored workspace.
//
// Its three shapes:
//   - a plain run: prepare, every phase, result;
//   - a tracked run with needs_confirmation (and no resume): prepare, the
//     phases up to "plan", then the workspace is packed, encrypted to
//     Assign.pool_public_key and stored (handoff.Store) before the runtime
//     removes it;
//   - a resumed run (Assign.resume): the stored workspace is read back,
//     verified, decrypted and extracted into a fresh workspace, and only
//     ResumeState.phases run. Its log goes to the stream ResumeLogID(run id),
//     logship having closed the run's first log when it stopped.
func (e *Executor) ExecuteFinish(ctx context.Context, poolID string, a *workv1.Assign, phase func(string)) *workv1.Finish {
	spec := a.GetSpec()
	ctx = telemetry.Extract(ctx, e.cfg.Propagator, a.GetTraceContext())
	ctx, span := e.cfg.Tracer.Start(ctx, "executor.run", trace.WithAttributes(attribute.String("hangar.run_id", a.GetRunId()),
		attribute.Bool("hangar.resumed", a.GetResume() != nil)))
	defer span.End()

	logID := a.GetRunId()
	if a.GetResume() != nil {
		logID = ResumeLogID(a.GetRunId())
	}
	env, secrets := e.environment(a)
	var rec *record
	if e.cfg.StateDir != "" {
		var phases []string
		switch {
		case a.GetResume() != nil:
			phases = slices.Clone(a.GetResume().GetPhases())
			if phases == nil {
				phases = []string{}
			}
		case holdsForConfirmation(a):
			phases = untilPlan(spec)
		}
		var err error
		if rec, err = e.newRecord(cmp.Or(poolID, e.cfg.PoolID), a, logID, secrets, phases); err != nil {
			e.cfg.Logger.Warn("the run cannot be re-adopted after an executor restart", "run_id", a.GetRunId(), "err", err)
			rec = nil
		}
		defer e.dropRecord(a.GetRunId())
	}
	off := e.openOffsets(a.GetRunId(), 0, nil)
	defer off.close()
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	logs := logclient.Open(logCtx, e.cfg.Logs, &logsv1.Open{
		RunId: logID, PoolId: cmp.Or(poolID, e.cfg.PoolID), StackId: spec.GetStack().GetId(),
		Secrets: secrets, TraceContext: telemetry.Inject(ctx, e.cfg.Propagator),
		Credential: a.GetLogCredential(),
	}, logclient.Options{Logger: e.cfg.Logger, OnCut: off.cut, OnAck: off.ack})
	sys := logs.Writer(logsv1.Stream_STREAM_SYSTEM)

	// A run that hands nothing off has its log closed as soon as its result
	// is known, while the runtime removes its containers and volume (the
	// Finish waits for both: nothing of the run is left when it is
	// reported).
	var early chan *workv1.Finish
	ended := func(res runner.Result) {
		early = make(chan *workv1.Finish, 1)
		go func() { early <- e.endLog(ctx, span, a.GetRunId(), logs, sys, res, nil) }()
	}
	res, hand := e.run(ctx, poolID, a, env, logs, sys, off, rec, phase, ended)
	if early != nil {
		return <-early
	}
	return e.endLog(ctx, span, a.GetRunId(), logs, sys, res, hand)
}

// endLog writes the run's last line, closes its log and returns the Finish.
func (e *Executor) endLog(ctx context.Context, span trace.Span, runID string, logs *logclient.Stream, sys io.Writer, res runner.Result, hand *workv1.HandOff) *workv1.Finish {
	if hand != nil {
		fmt.Fprintf(sys, "\n[hangar] run %s: planned; its workspace is stored encrypted, waiting for confirmation\n", runID)
	} else {
		fmt.Fprintf(sys, "\n[hangar] run %s: %s (exit code %d)%s\n", runID, outcomeWord(res.Outcome), res.ExitCode, reasonSuffix(res.Reason))
	}

	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	closed, err := logs.Close(closeCtx)
	fin := &eventv1.RunFinished{Outcome: res.Outcome, ExitCode: int32(res.ExitCode), Reason: res.Reason}
	if err != nil {
		e.cfg.Logger.Error("closing the run's log failed", "run_id", runID, "err", err)
		span.RecordError(err)
	} else {
		fin.LogKey = closed.GetLogKey()
	}
	if hand != nil {
		span.SetAttributes(attribute.String("hangar.outcome", "unconfirmed"))
		return &workv1.Finish{Unconfirmed: &eventv1.RunUnconfirmed{StateKey: hand.GetStateKey()}, HandOff: hand}
	}
	span.SetAttributes(attribute.String("hangar.outcome", outcomeWord(res.Outcome)))
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED {
		span.SetStatus(codes.Error, outcomeWord(res.Outcome))
	}
	return &workv1.Finish{Result: fin}
}

// ResumeLogID is the log stream of a resumed run's phases: the run id with
// "-resumed" appended, or, when that would not be a valid run id (64
// characters at most), a prefix of it and a digest of the whole.
func ResumeLogID(runID string) string {
	// One definition, shared with logship's check of run credentials.
	return runcred.ResumeLogID(runID)
}

// holdsForConfirmation reports whether a run stops after "plan".
func holdsForConfirmation(a *workv1.Assign) bool {
	return a.GetResume() == nil && a.GetSpec().GetType() == runv1.RunType_RUN_TYPE_TRACKED && a.GetSpec().GetNeedsConfirmation()
}

// untilPlan names the phases of spec up to and including "plan" (all of
// them if it has no "plan").
func untilPlan(spec *runv1.RunSpec) []string {
	names := []string{}
	for _, p := range spec.GetPhases() {
		names = append(names, p.GetName())
		if p.GetName() == "plan" {
			return names
		}
	}
	return names
}

func failedResult(reason string) runner.Result {
	return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1, Reason: reason}
}

// ended, when the run hands nothing off, is called with its result before the
// runtime's session is torn down (runner.Job.Ended); run then returns that
// result.
func (e *Executor) run(ctx context.Context, poolID string, a *workv1.Assign, env []string, logs *logclient.Stream, sys io.Writer, off *offsets, rec *record, phase func(string), ended func(runner.Result)) (runner.Result, *workv1.HandOff) {
	hold, resume := holdsForConfirmation(a), a.GetResume()
	var pub *rsa.PublicKey
	if (hold || resume != nil) && e.cfg.State == nil {
		return failedResult("the run needs a state bucket for its confirmation, and this executor has none (HANGAR_S3_BUCKET)"), nil
	}
	if (hold || resume != nil) && poolID == "" {
		return failedResult("the run needs the pool id for its stored state, and the gateway did not send it"), nil
	}
	if hold {
		var err error
		if pub, err = sealedbox.ParsePublicKey(a.GetPoolPublicKey()); err != nil {
			return failedResult("the assignment has no usable pool public key to store the run's state: " + err.Error()), nil
		}
	}

	phase("prepare")
	_, pspan := e.cfg.Tracer.Start(ctx, "executor.phase prepare")
	wsOpts := e.cfg.Workspace
	wsOpts.Stdout, wsOpts.Stderr = sys, sys
	spec := a.GetSpec()
	if resume != nil {
		// The source comes from the stored workspace, not from git.
		spec = &runv1.RunSpec{Source: &runv1.Source{ProjectRoot: spec.GetSource().GetProjectRoot()}}
	}
	ws, err := workspace.Prepare(ctx, spec, wsOpts)
	if err == nil && resume != nil {
		fmt.Fprintf(sys, "[hangar] restoring the run's stored workspace\n")
		if err = e.cfg.State.Restore(ctx, a.GetRunId(), poolID, resume, ws.Dir); err != nil {
			_ = ws.Remove()
			pspan.End()
			if ctx.Err() != nil {
				return supervise.FromCause(runner.Result{ExitCode: -1}, context.Cause(ctx), e.cfg.Limits), nil
			}
			return failedResult(err.Error()), nil
		}
		defer e.deleteState(a.GetRunId(), resume.GetStateKey())
	}
	pspan.End()
	if err != nil {
		if ctx.Err() != nil {
			return supervise.FromCause(runner.Result{ExitCode: -1}, context.Cause(ctx), e.cfg.Limits), nil
		}
		return failedResult("preparing the workspace failed: " + err.Error()), nil
	}
	defer func() {
		if err := ws.Remove(); err != nil {
			e.cfg.Logger.Warn("removing workspace failed", "run_id", a.GetRunId(), "err", err)
		}
	}()

	var cur trace.Span
	job := &runner.Job{
		RunID: a.GetRunId(), PoolID: poolID, Spec: a.GetSpec(), Workspace: ws.Dir, Env: env,
		Stdout: logs.Writer(logsv1.Stream_STREAM_STDOUT), Stderr: logs.Writer(logsv1.Stream_STREAM_STDERR),
		Durable: off.durable, StopGrace: e.cfg.StopGrace,
		OnPhase:    e.onPhase(ctx, &cur, sys, phase),
		Checkpoint: e.checkpoint(rec),
	}
	var packing *packer
	switch {
	case resume != nil:
		job.Phases = slices.Clone(resume.GetPhases())
		if job.Phases == nil {
			job.Phases = []string{}
		}
	case hold:
		job.Phases = untilPlan(a.GetSpec())
		packing = e.startPacking()
		job.ExportTo = packing
	}
	if packing == nil {
		job.Ended = func(res runner.Result) {
			if cur != nil {
				cur.End()
				cur = nil
			}
			ended(res)
		}
	}
	res := supervise.Run(ctx, e.cfg.Runtime, job, e.cfg.Limits)
	if cur != nil {
		cur.End()
	}
	if packing == nil {
		return res, nil
	}
	return e.handOff(ctx, sys, a.GetRunId(), poolID, pub, packing, res)
}

// onPhase returns the Job.OnPhase of a run: a span per phase, a line in the
// log, a progress report.
func (e *Executor) onPhase(ctx context.Context, cur *trace.Span, sys io.Writer, phase func(string)) func(string) {
	return func(name string) {
		if *cur != nil {
			(*cur).End()
		}
		_, *cur = e.cfg.Tracer.Start(ctx, "executor.phase "+name, trace.WithAttributes(attribute.String("hangar.phase", name)))
		fmt.Fprintf(sys, "[hangar] phase %s\n", name)
		phase(name)
	}
}

// handOff finishes the export of a run that stops for confirmation and
// stores its workspace, encrypted.
func (e *Executor) handOff(ctx context.Context, sys io.Writer, runID, poolID string, pub *rsa.PublicKey, packing *packer, res runner.Result) (runner.Result, *workv1.HandOff) {
	packed, perr := packing.finish(res.Outcome == eventv1.Outcome_OUTCOME_FINISHED)
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED {
		return res, nil
	}
	if perr != nil {
		return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: res.ExitCode, Reason: perr.Error()}, nil
	}
	_, sspan := e.cfg.Tracer.Start(ctx, "executor.store_state")
	defer sspan.End()
	hand, err := e.cfg.State.Put(ctx, runID, poolID, pub, packed)
	clear(packed)
	if err != nil {
		sspan.RecordError(err)
		if ctx.Err() != nil {
			return supervise.FromCause(runner.Result{ExitCode: res.ExitCode}, context.Cause(ctx), e.cfg.Limits), nil
		}
		return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: res.ExitCode, Reason: "storing the run's workspace failed: " + err.Error()}, nil
	}
	fmt.Fprintf(sys, "[hangar] workspace stored (%d bytes, encrypted)\n", hand.GetSize())
	return res, hand
}

// packer packs the workspace the phase loop exports (runner.Job.ExportTo)
// into the hand-off's compressed archive as it arrives.
type packer struct {
	pw     *io.PipeWriter
	done   chan struct{}
	packed []byte
	err    error
}

func (e *Executor) startPacking() *packer {
	pr, pw := io.Pipe()
	p := &packer{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.packed, p.err = e.cfg.State.Pack(func(w io.Writer) error {
			_, err := io.Copy(w, pr)
			return err
		})
		// A pack that stopped early (too large) fails the export's writes.
		pr.CloseWithError(cmp.Or(p.err, io.ErrClosedPipe))
	}()
	return p
}

func (p *packer) Write(b []byte) (int, error) { return p.pw.Write(b) }

// finish ends the export (complete: the loop wrote all of it) and returns the
// packed archive.
func (p *packer) finish(complete bool) ([]byte, error) {
	if complete {
		_ = p.pw.Close()
	} else {
		_ = p.pw.CloseWithError(errors.New("the workspace was not exported"))
	}
	<-p.done
	return p.packed, p.err
}

// deleteState removes a resumed run's state object: the run ends with this
// attempt whatever its outcome (a lost resumed run is not resumed again).
func (e *Executor) deleteState(runID, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.cfg.State.Delete(ctx, key); err != nil {
		e.cfg.Logger.Warn("the stored state of a resumed run was not deleted", "run_id", runID, "err", err)
	}
}

// environment returns the run's environment and the values logship must mask.
func (e *Executor) environment(a *workv1.Assign) ([]string, []*logsv1.Secret) {
	var env []string
	var secrets []*logsv1.Secret
	env = append(env, e.cfg.WhitelistEnv...)
	for _, kv := range e.cfg.MaskEnv {
		env = append(env, kv)
		name, value, _ := cut(kv)
		secrets = append(secrets, &logsv1.Secret{Name: name, Value: []byte(value)})
	}
	for _, v := range a.GetSpec().GetEnv() {
		env = append(env, v.GetName()+"="+v.GetValue())
		if v.GetSecret() {
			secrets = append(secrets, &logsv1.Secret{Name: v.GetName(), Value: []byte(v.GetValue())})
		}
	}
	return env, secrets
}

func cut(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

func outcomeWord(o eventv1.Outcome) string {
	switch o {
	case eventv1.Outcome_OUTCOME_FINISHED:
		return "finished"
	case eventv1.Outcome_OUTCOME_FAILED:
		return "failed"
	case eventv1.Outcome_OUTCOME_STOPPED:
		return "stopped"
	case eventv1.Outcome_OUTCOME_LOST:
		return "lost"
	case eventv1.Outcome_OUTCOME_TIMED_OUT:
		return "timed out"
	}
	return "unknown"
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

// CloseOrphanLog ends the log of a run that an earlier life of this executor
// left open, so that what logship had stored becomes the run's final object. It
// returns the object's key, or "" if logship could not be reached in time.
//
// cred is the run's log credential kept from its Assign (nil without TLS).
func (e *Executor) CloseOrphanLog(ctx context.Context, runID string, cred *logsv1.RunCredential) string {
	defer e.dropRecord(runID)
	logs := logclient.Open(ctx, e.cfg.Logs, &logsv1.Open{RunId: runID, PoolId: e.cfg.PoolID, Credential: cred}, logclient.Options{Logger: e.cfg.Logger})
	fmt.Fprintf(logs.Writer(logsv1.Stream_STREAM_SYSTEM), "\n[hangar] the executor stopped in the middle of this run; the log ends here\n")
	closed, err := logs.Close(ctx)
	if err != nil {
		e.cfg.Logger.Warn("could not close the log of an orphaned run", "run_id", runID, "err", err)
		return ""
	}
	return closed.GetLogKey()
}
