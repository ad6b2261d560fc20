package execute

import (
	"context"
	"crypto/rsa"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/services/executor/internal/logclient"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
)

// record is what a later executor process needs to re-adopt a run: kept in
// Config.StateDir/<run id>.json while the run goes on. It holds no variable
// value and no output: the run's environment is read back from the runtime
// (the container keeps it), its output from the relay.
type record struct {
	RunID   string   `json:"run_id"`
	LogID   string   `json:"log_id"`
	PoolID  string   `json:"pool_id"`
	Lease   string   `json:"lease_id"`
	Epoch   uint64   `json:"epoch"`
	Spec    []byte   `json:"spec"` // RunSpec, variable values cleared
	Secrets []string `json:"secret_names"`
	// Phases is Job.Phases (nil: every phase).
	Phases        []string          `json:"phases"`
	Hold          bool              `json:"hold"`
	PoolPublicKey []byte            `json:"pool_public_key,omitempty"`
	ResumeKey     string            `json:"resume_state_key,omitempty"`
	TraceContext  map[string]string `json:"trace_context,omitempty"`
	StartedUnixMs int64             `json:"started_unix_ms"`
	// Phase is the index of the phase started last (-1: none yet), Base
	// the job's output count before it.
	Phase int    `json:"phase"`
	Base  uint64 `json:"base"`
}

func (e *Executor) recordPath(runID string) string {
	return filepath.Join(e.cfg.StateDir, runID+".json")
}

// seqPath is the run's sequence map: for each chunk of its log, 16 bytes:
// the chunk's sequence number and the job's output count through it.
func (e *Executor) seqPath(runID string) string {
	return filepath.Join(e.cfg.StateDir, runID+".seq")
}

func (e *Executor) saveRecord(r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("run record: %w", err)
	}
	tmp := e.recordPath(r.RunID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("run record: %w", err)
	}
	if err := os.Rename(tmp, e.recordPath(r.RunID)); err != nil {
		return fmt.Errorf("run record: %w", err)
	}
	return nil
}

func (e *Executor) loadRecord(runID string) (*record, error) {
	b, err := os.ReadFile(e.recordPath(runID))
	if err != nil {
		return nil, fmt.Errorf("run record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("run record %s: %w", runID, err)
	}
	if r.RunID != runID {
		return nil, fmt.Errorf("run record %s names run %q", runID, r.RunID)
	}
	return &r, nil
}

// dropRecord removes what a run kept for its re-adoption.
func (e *Executor) dropRecord(runID string) {
	if e.cfg.StateDir == "" {
		return
	}
	for _, p := range []string{e.recordPath(runID), e.seqPath(runID)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			e.cfg.Logger.Warn("removing a run record failed", "run_id", runID, "err", err)
		}
	}
}

// newRecord describes a run at its start.
func (e *Executor) newRecord(poolID string, a *workv1.Assign, logID string, secrets []*logsv1.Secret, phases []string) (*record, error) {
	spec := proto.Clone(a.GetSpec()).(*runv1.RunSpec)
	for _, v := range spec.GetEnv() {
		v.Value = ""
	}
	b, err := proto.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("run record: %w", err)
	}
	r := &record{
		RunID: a.GetRunId(), LogID: logID, PoolID: poolID, Lease: a.GetLeaseId(), Epoch: a.GetEpoch(), Spec: b,
		Phases: phases, Hold: holdsForConfirmation(a), PoolPublicKey: a.GetPoolPublicKey(),
		TraceContext: a.GetTraceContext(), StartedUnixMs: time.Now().UnixMilli(), Phase: -1,
	}
	if a.GetResume() != nil {
		r.ResumeKey = a.GetResume().GetStateKey()
	}
	for _, s := range secrets {
		r.Secrets = append(r.Secrets, s.GetName())
	}
	return r, nil
}

// offsets follows the job's output through the log stream: which chunk
// holds which output count, and how much of it logship stores durably.
type offsets struct {
	mu      sync.Mutex
	cum     uint64 // stdout and stderr bytes cut into chunks so far
	pending []seqCum
	durable *runner.Durable
	file    *os.File // the sequence map, or nil
	log     func(msg string, args ...any)
}

type seqCum struct{ seq, cum uint64 }

func (o *offsets) cut(seq uint64, st logsv1.Stream, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if st == logsv1.Stream_STREAM_STDOUT || st == logsv1.Stream_STREAM_STDERR {
		o.cum += uint64(n)
	}
	o.pending = append(o.pending, seqCum{seq, o.cum})
	if o.file != nil {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:], seq)
		binary.BigEndian.PutUint64(b[8:], o.cum)
		if _, err := o.file.Write(b[:]); err != nil {
			o.log("writing the run's sequence map failed: it cannot be re-adopted", "err", err)
			_ = o.file.Close()
			o.file = nil
		}
	}
}

func (o *offsets) ack(through uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := 0
	var cum uint64
	found := false
	for i < len(o.pending) && o.pending[i].seq <= through {
		cum, found = o.pending[i].cum, true
		i++
	}
	o.pending = o.pending[i:]
	if found {
		o.durable.Set(cum)
	}
}

func (o *offsets) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		_ = o.file.Close()
		o.file = nil
	}
}

// openOffsets starts following a run's output from count stored; with a
// state dir, the sequence map is kept in it, rewritten to keep only the
// chunks below next (those logship stores).
func (e *Executor) openOffsets(runID string, stored uint64, keep []seqCum) *offsets {
	o := &offsets{cum: stored, durable: runner.NewDurable(stored), log: func(msg string, args ...any) {
		e.cfg.Logger.Warn(msg, append(args, "run_id", runID)...)
	}}
	if e.cfg.StateDir == "" {
		return o
	}
	f, err := os.OpenFile(e.seqPath(runID), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		o.log("creating the run's sequence map failed: it cannot be re-adopted", "err", err)
		return o
	}
	for _, k := range keep {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:], k.seq)
		binary.BigEndian.PutUint64(b[8:], k.cum)
		if _, err := f.Write(b[:]); err != nil {
			o.log("rewriting the run's sequence map failed", "err", err)
		}
	}
	o.file = f
	return o
}

// storedThrough reads a run's sequence map and returns the output count
// logship stores when it expects sequence next, and the entries below next.
func (e *Executor) storedThrough(runID string, next uint64) (uint64, []seqCum, error) {
	b, err := os.ReadFile(e.seqPath(runID))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, nil, fmt.Errorf("sequence map: %w", err)
	}
	var keep []seqCum
	var stored uint64
	var last uint64
	for len(b) >= 16 {
		seq, cum := binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
		b = b[16:]
		if seq >= next {
			continue // cut by an earlier life, never stored
		}
		keep = append(keep, seqCum{seq, cum})
		if seq >= last {
			last, stored = seq, cum
		}
	}
	if next > 1 && last != next-1 {
		return 0, nil, fmt.Errorf("sequence map: logship stores through chunk %d, the map knows chunk %d last", next-1, last)
	}
	return stored, keep, nil
}

// Readopt prepares the continuation of a run an earlier process of this
// executor was running when it died: its record is read, and the runtime
// asked whether its phase still runs (runner.Adopter). It returns the
// function that carries the run on to its end, like ExecuteFinish, or an
// error when the run cannot be re-adopted (it is then lost).
//
// cred is the run's log credential kept from its Assign (nil without TLS).
func (e *Executor) Readopt(ctx context.Context, runID string, cred *logsv1.RunCredential) (func(ctx context.Context, phase func(string)) *workv1.Finish, error) {
	ad, ok := e.cfg.Runtime.(runner.Adopter)
	if !ok || e.cfg.StateDir == "" {
		return nil, errors.New("this runtime's runs end with the executor")
	}
	rec, err := e.loadRecord(runID)
	if err != nil {
		return nil, err
	}
	if rec.Phase < 0 {
		return nil, errors.New("no phase had started")
	}
	env, err := ad.Adoptable(ctx, runID, rec.Phase)
	if err != nil {
		return nil, err
	}
	spec := &runv1.RunSpec{}
	if err := proto.Unmarshal(rec.Spec, spec); err != nil {
		return nil, fmt.Errorf("run record %s: %w", runID, err)
	}
	return func(ctx context.Context, phase func(string)) *workv1.Finish {
		return e.continueRun(ctx, rec, spec, env, cred, phase)
	}, nil
}

// continueRun is ExecuteFinish for a re-adopted run.
func (e *Executor) continueRun(ctx context.Context, rec *record, spec *runv1.RunSpec, env []string, cred *logsv1.RunCredential, phase func(string)) *workv1.Finish {
	ctx = telemetry.Extract(ctx, e.cfg.Propagator, rec.TraceContext)
	ctx, span := e.cfg.Tracer.Start(ctx, "executor.run", trace.WithAttributes(attribute.String("hangar.run_id", rec.RunID),
		attribute.Bool("hangar.readopted", true)))
	defer span.End()
	defer e.dropRecord(rec.RunID)

	var secrets []*logsv1.Secret
	for _, kv := range env {
		name, value, _ := cut(kv)
		if slices.Contains(rec.Secrets, name) {
			secrets = append(secrets, &logsv1.Secret{Name: name, Value: []byte(value)})
		}
	}
	var off *offsets
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	logs := logclient.Open(logCtx, e.cfg.Logs, &logsv1.Open{
		RunId: rec.LogID, PoolId: rec.PoolID, StackId: spec.GetStack().GetId(),
		Secrets: secrets, TraceContext: telemetry.Inject(ctx, e.cfg.Propagator), Credential: cred,
	}, logclient.Options{Logger: e.cfg.Logger,
		OnCut: func(seq uint64, st logsv1.Stream, n int) {
			if off != nil {
				off.cut(seq, st, n)
			}
		},
		OnAck: func(through uint64) {
			if off != nil {
				off.ack(through)
			}
		}})
	sys := logs.Writer(logsv1.Stream_STREAM_SYSTEM)
	res, hand := e.adopted(ctx, rec, spec, env, logs, sys, &off, phase)
	if off != nil {
		defer off.close()
	}
	return e.endLog(ctx, span, rec.RunID, logs, sys, res, hand)
}

// adopted runs the rest of a re-adopted run; *off is set once logship said
// where the log stands (before that, no chunk is cut).
func (e *Executor) adopted(ctx context.Context, rec *record, spec *runv1.RunSpec, env []string, logs *logclient.Stream, sys io.Writer, off **offsets, phase func(string)) (runner.Result, *workv1.HandOff) {
	next, err := logs.Opened(ctx)
	if err != nil {
		return supervise.FromCause(runner.Result{Outcome: eventv1.Outcome_OUTCOME_LOST, ExitCode: -1, Reason: "the run's log could not be reopened after the executor restarted"}, context.Cause(ctx), e.cfg.Limits), nil
	}
	stored, keep, err := e.storedThrough(rec.RunID, next)
	if err != nil {
		return failedResult("re-adopting the run after an executor restart: " + err.Error()), nil
	}
	*off = e.openOffsets(rec.RunID, stored, keep)
	fmt.Fprintf(sys, "\n[hangar] the executor restarted; run %s re-adopted, its output continues\n", rec.RunID)
	e.cfg.Logger.Info("run re-adopted", "run_id", rec.RunID, "phase", rec.Phase, "output_stored", stored)

	var pub *rsa.PublicKey
	if rec.Hold {
		if pub, err = sealedbox.ParsePublicKey(rec.PoolPublicKey); err != nil {
			return failedResult("the run's pool public key is not usable: " + err.Error()), nil
		}
	}
	if rec.ResumeKey != "" {
		defer e.deleteState(rec.RunID, rec.ResumeKey)
	}
	var cur trace.Span
	job := &runner.Job{
		RunID: rec.RunID, Spec: spec, Env: env,
		Stdout: logs.Writer(logsv1.Stream_STREAM_STDOUT), Stderr: logs.Writer(logsv1.Stream_STREAM_STDERR),
		Durable: (*off).durable, StopGrace: e.cfg.StopGrace, Phases: rec.Phases,
		Adopt:      &runner.Adoption{Phase: rec.Phase, Base: rec.Base, Stored: stored},
		OnPhase:    e.onPhase(ctx, &cur, sys, phase),
		Checkpoint: e.checkpoint(rec),
	}
	lim := e.cfg.Limits.ForSpec(spec)
	if lim.RunTimeout > 0 {
		// The run timeout counts from the run's start, not the re-adoption.
		lim.RunTimeout = max(lim.RunTimeout-time.Since(time.UnixMilli(rec.StartedUnixMs)), time.Millisecond)
	}
	var packing *packer
	if rec.Hold {
		packing = e.startPacking()
		job.ExportTo = packing
	}
	res := supervise.Run(ctx, e.cfg.Runtime, job, lim)
	if cur != nil {
		cur.End()
	}
	if packing == nil {
		return res, nil
	}
	return e.handOff(ctx, sys, rec.RunID, rec.PoolID, pub, packing, res)
}

// checkpoint returns the Job.Checkpoint that keeps rec up to date.
func (e *Executor) checkpoint(rec *record) func(int, uint64) {
	if rec == nil || e.cfg.StateDir == "" {
		return nil
	}
	return func(i int, base uint64) {
		rec.Phase, rec.Base = i, base
		if err := e.saveRecord(rec); err != nil {
			e.cfg.Logger.Warn("the run cannot be re-adopted after an executor restart", "run_id", rec.RunID, "err", err)
		}
	}
}
