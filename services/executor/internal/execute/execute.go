// Package execute carries one assigned run from start to end on this host:
// it opens the run's log stream to logship, prepares the workspace and fetches
// the source, runs the phases in the configured runtime under the run and
// no-output timeouts, closes the log, removes the workspace, and returns the
// run's final result with the key of its stored log.
package execute

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/telemetry"
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
	StopGrace             time.Duration
	Tracer                trace.Tracer
	Propagator            propagation.TextMapPropagator
	Logger                *slog.Logger
}

// Executor implements worker.Executor.
type Executor struct{ cfg Config }

// New returns an Executor.
func New(cfg Config) *Executor { return &Executor{cfg: cfg} }

// Execute runs a to its end.
func (e *Executor) Execute(ctx context.Context, a *workv1.Assign, phase func(string)) *eventv1.RunFinished {
	spec := a.GetSpec()
	ctx = telemetry.Extract(ctx, e.cfg.Propagator, a.GetTraceContext())
	ctx, span := e.cfg.Tracer.Start(ctx, "executor.run", trace.WithAttributes(attribute.String("hangar.run_id", a.GetRunId())))
	defer span.End()

	env, secrets := e.environment(a)
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	logs := logclient.Open(logCtx, e.cfg.Logs, &logsv1.Open{
		RunId: a.GetRunId(), PoolId: e.cfg.PoolID, StackId: spec.GetStack().GetId(),
		Secrets: secrets, TraceContext: telemetry.Inject(ctx, e.cfg.Propagator),
	}, logclient.Options{Logger: e.cfg.Logger})
	sys := logs.Writer(logsv1.Stream_STREAM_SYSTEM)

	res := e.run(ctx, a, env, logs, sys, phase)
	fmt.Fprintf(sys, "\n[hangar] run %s: %s (exit code %d)%s\n", a.GetRunId(), outcomeWord(res.Outcome), res.ExitCode, reasonSuffix(res.Reason))

	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	closed, err := logs.Close(closeCtx)
	fin := &eventv1.RunFinished{Outcome: res.Outcome, ExitCode: int32(res.ExitCode), Reason: res.Reason}
	if err != nil {
		e.cfg.Logger.Error("closing the run's log failed", "run_id", a.GetRunId(), "err", err)
		span.RecordError(err)
	} else {
		fin.LogKey = closed.GetLogKey()
	}
	span.SetAttributes(attribute.String("hangar.outcome", outcomeWord(res.Outcome)))
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED {
		span.SetStatus(codes.Error, outcomeWord(res.Outcome))
	}
	return fin
}

func (e *Executor) run(ctx context.Context, a *workv1.Assign, env []string, logs *logclient.Stream, sys interface{ Write([]byte) (int, error) }, phase func(string)) runner.Result {
	phase("prepare")
	_, pspan := e.cfg.Tracer.Start(ctx, "executor.phase prepare")
	wsOpts := e.cfg.Workspace
	wsOpts.Stdout, wsOpts.Stderr = sys, sys
	ws, err := workspace.Prepare(ctx, a.GetSpec(), wsOpts)
	pspan.End()
	if err != nil {
		if ctx.Err() != nil {
			return supervise.FromCause(runner.Result{ExitCode: -1}, context.Cause(ctx), e.cfg.Limits)
		}
		return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1, Reason: "preparing the workspace failed: " + err.Error()}
	}
	defer func() {
		if err := ws.Remove(); err != nil {
			e.cfg.Logger.Warn("removing workspace failed", "run_id", a.GetRunId(), "err", err)
		}
	}()

	var cur trace.Span
	job := &runner.Job{
		RunID: a.GetRunId(), Spec: a.GetSpec(), Workspace: ws.Dir, Env: env,
		Stdout: logs.Writer(logsv1.Stream_STREAM_STDOUT), Stderr: logs.Writer(logsv1.Stream_STREAM_STDERR),
		StopGrace: e.cfg.StopGrace,
		OnPhase: func(name string) {
			if cur != nil {
				cur.End()
			}
			_, cur = e.cfg.Tracer.Start(ctx, "executor.phase "+name, trace.WithAttributes(attribute.String("hangar.phase", name)))
			fmt.Fprintf(sys, "[hangar] phase %s\n", name)
			phase(name)
		},
	}
	res := supervise.Run(ctx, e.cfg.Runtime, job, e.cfg.Limits)
	if cur != nil {
		cur.End()
	}
	return res
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
func (e *Executor) CloseOrphanLog(ctx context.Context, runID string) string {
	logs := logclient.Open(ctx, e.cfg.Logs, &logsv1.Open{RunId: runID, PoolId: e.cfg.PoolID}, logclient.Options{Logger: e.cfg.Logger})
	fmt.Fprintf(logs.Writer(logsv1.Stream_STREAM_SYSTEM), "\n[hangar] the executor stopped in the middle of this run; the log ends here\n")
	closed, err := logs.Close(ctx)
	if err != nil {
		e.cfg.Logger.Warn("could not close the log of an orphaned run", "run_id", runID, "err", err)
		return ""
	}
	return closed.GetLogKey()
}
