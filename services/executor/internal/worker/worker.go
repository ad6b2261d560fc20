// Package worker is the executor's side of the work protocol (hangar.work.v1): it
// attaches to the gateway, takes assigned runs into its slots, renews their
// leases, reports phases and results, and reattaches with backoff, listing the
// leases it holds, whenever the stream breaks.
//
// Fencing: a run whose lease the gateway revokes, or whose deadline passes
// without a renewal (the executor is cut off from the gateway), is stopped at
// once with runner.ErrLeaseLost, so a run never goes on after the gateway may
// have declared it lost.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/atomicfile"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// Client is the gateway's WorkService client.
type Client interface {
	Attach(ctx context.Context, opts ...grpc.CallOption) (workv1.WorkService_AttachClient, error)
}

// Executor runs one assigned run to its end and returns its result. ctx ends
// with a cause (runner.ErrCancelled, runner.ErrLeaseLost) when the run must stop.
type Executor interface {
	Execute(ctx context.Context, a *workv1.Assign, phase func(name string)) *eventv1.RunFinished
}

// HandOffExecutor is an Executor that can also stop a run for confirmation.
// The worker prefers ExecuteFinish when the Executor has it: it returns the
// Finish to report (the worker sets lease id and epoch), with either Result
// or Unconfirmed and HandOff. poolID is the pool of the gateway's Welcome.
type HandOffExecutor interface {
	Executor
	ExecuteFinish(ctx context.Context, poolID string, a *workv1.Assign, phase func(name string)) *workv1.Finish
}

// Config describes the worker.
type Config struct {
	ID       string
	Slots    int
	Metadata map[string]string
	Version  string
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// CancelReason is used when CancelAll stops the runs.
	CancelReason string
	// Unavailable, when set, is polled every AdmissionInterval: a non-empty
	// answer (low disk, low memory...) makes the worker take no new run and
	// say why in its Status.
	Unavailable       func() string
	AdmissionInterval time.Duration
	// StateFile keeps the leases held across an executor restart ("" = none).
	// Runs that were going on when the executor died are reported at the next
	// start as lost, after Orphaned has cleaned up after them.
	StateFile string
	// Orphaned is called at start for each run of an earlier life of this
	// executor that is not re-adopted; it returns the key of the run's log
	// once closed, if any.
	Orphaned func(ctx context.Context, runID string, cred *logsv1.RunCredential) string
	// Readopt, when set, is asked at start for each run of an earlier life
	// of this executor: it returns the function that carries the run on
	// (its phase still runs), or an error (the run is then reported lost).
	// Re-adopted runs keep their lease if the gateway still has it current
	// (the Hello lists them); otherwise they are stopped on LeaseRevoked.
	Readopt func(ctx context.Context, runID string, cred *logsv1.RunCredential) (func(ctx context.Context, phase func(string)) *workv1.Finish, error)
}

// Worker is an executor attached to its gateway.
type Worker struct {
	cfg    Config
	client Client
	exec   Executor
	log    *slog.Logger

	mu           sync.Mutex
	runs         map[string]*active    // by lease id
	unreported   map[string]unreported // finished runs the gateway has not acknowledged, by lease id
	drained      bool
	unavailable  string
	exitWhenIdle bool
	leaseDur     time.Duration
	poolID       string                     // from the gateway's Welcome
	out          chan *workv1.AttachRequest // current session's sender; nil between sessions
	backlog      []*workv1.AttachRequest    // progress reports made between sessions, sent after reattaching
	idle         chan struct{}              // closed when no run is active
	exitIdle     chan struct{}              // closed when drained with exit_when_idle and idle
	wg           sync.WaitGroup

	busy prometheus.Gauge
}

type unreported struct {
	runID string
	fin   *workv1.Finish
}

type active struct {
	assign   *workv1.Assign
	cancel   context.CancelCauseFunc
	deadline time.Time
	revoked  bool
}

// New returns a Worker.
func New(cfg Config, client Client, exec Executor) *Worker {
	w := &Worker{
		cfg: cfg, client: client, exec: exec, log: cfg.Logger,
		runs: map[string]*active{}, unreported: map[string]unreported{}, leaseDur: 30 * time.Second,
		idle: make(chan struct{}), exitIdle: make(chan struct{}),
		busy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_executor_runs_active", Help: "Runs this executor is running."}),
	}
	close(w.idle)
	w.recoverOrphans()
	slots := prometheus.NewGauge(prometheus.GaugeOpts{Name: "hangar_executor_slots_total", Help: "Slots of this executor."})
	slots.Set(float64(cfg.Slots))
	cfg.Registry.MustRegister(w.busy, slots)
	return w
}

// Run attaches to the gateway and serves assignments until ctx ends. Runs
// already going on are not stopped by ctx: see Drain, CancelAll and Wait.
func (w *Worker) Run(ctx context.Context) error {
	runCtx := context.WithoutCancel(ctx)
	go w.fence(ctx)
	if w.cfg.Unavailable != nil {
		go w.admission(ctx)
	}
	backoff := 200 * time.Millisecond
	for {
		start := time.Now()
		err := w.session(ctx, runCtx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = 200 * time.Millisecond
		}
		w.log.Warn("work stream to the gateway ended; reattaching", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (w *Worker) session(ctx, runCtx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := w.client.Attach(sctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	w.mu.Lock()
	hello := &workv1.Hello{ExecutorId: w.cfg.ID, Slots: uint32(w.cfg.Slots), Metadata: w.cfg.Metadata, Version: w.cfg.Version, Drained: w.drained}
	for id, a := range w.runs {
		hello.Held = append(hello.Held, &workv1.HeldLease{RunId: a.assign.GetRunId(), LeaseId: id, Epoch: a.assign.GetEpoch()})
	}
	for id, u := range w.unreported {
		hello.Held = append(hello.Held, &workv1.HeldLease{RunId: u.runID, LeaseId: id, Epoch: u.fin.GetEpoch()})
	}
	out := make(chan *workv1.AttachRequest, 256)
	w.out = out
	resend := make([]*workv1.Finish, 0, len(w.unreported))
	for _, u := range w.unreported {
		resend = append(resend, u.fin)
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.out == out {
			w.out = nil
		}
		w.mu.Unlock()
	}()

	if err := st.Send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Hello{Hello: hello}}); err != nil {
		return err
	}
	first, err := st.Recv()
	if err != nil {
		return err
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		return errors.New("gateway did not answer Hello with Welcome")
	}
	w.mu.Lock()
	if s := welcome.GetLeaseSeconds(); s > 0 {
		w.leaseDur = time.Duration(s) * time.Second
	}
	w.poolID = welcome.GetPoolId()
	leaseDur := w.leaseDur
	w.mu.Unlock()
	w.log.Info("attached to gateway", "pool_id", welcome.GetPoolId(), "lease", leaseDur)
	w.mu.Lock()
	backlog := w.backlog
	w.backlog = nil
	w.mu.Unlock()
	for _, m := range backlog {
		out <- m
	}
	for _, f := range resend {
		out <- &workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: f}}
	}
	w.sendStatus()

	sendErr := make(chan error, 1)
	go func() {
		renew := time.NewTicker(leaseDur / 3)
		defer renew.Stop()
		for {
			select {
			case <-sctx.Done():
				sendErr <- sctx.Err()
				return
			case m := <-out:
				if err := st.Send(m); err != nil {
					sendErr <- err
					return
				}
			case <-renew.C:
				w.mu.Lock()
				var msgs []*workv1.AttachRequest
				for id, a := range w.runs {
					msgs = append(msgs, &workv1.AttachRequest{Kind: &workv1.AttachRequest_Renew{Renew: &workv1.Renew{LeaseId: id, Epoch: a.assign.GetEpoch()}}})
				}
				w.mu.Unlock()
				for _, m := range msgs {
					if err := st.Send(m); err != nil {
						sendErr <- err
						return
					}
				}
			}
		}
	}()
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			w.handle(runCtx, m)
		}
	}()
	select {
	case err := <-sendErr:
		return err
	case err := <-recvErr:
		return err
	}
}

func (w *Worker) handle(runCtx context.Context, m *workv1.AttachResponse) {
	switch k := m.Kind.(type) {
	case *workv1.AttachResponse_Assign:
		w.start(runCtx, k.Assign)
	case *workv1.AttachResponse_Cancel:
		w.mu.Lock()
		for _, a := range w.runs {
			if a.assign.GetRunId() == k.Cancel.GetRunId() {
				w.log.Info("cancelling run", "run_id", a.assign.GetRunId(), "reason", k.Cancel.GetReason())
				a.cancel(fmt.Errorf("%w: %s", runner.ErrCancelled, k.Cancel.GetReason()))
			}
		}
		w.mu.Unlock()
	case *workv1.AttachResponse_Renewed:
		w.mu.Lock()
		if a, ok := w.runs[k.Renewed.GetLeaseId()]; ok && a.assign.GetEpoch() == k.Renewed.GetEpoch() {
			a.deadline = time.UnixMilli(k.Renewed.GetDeadlineUnixMs())
			w.saveStateLocked()
		}
		w.mu.Unlock()
	case *workv1.AttachResponse_Revoked:
		w.mu.Lock()
		id := k.Revoked.GetLeaseId()
		delete(w.unreported, id)
		if a, ok := w.runs[id]; ok && !a.revoked {
			a.revoked = true
			w.log.Warn("lease revoked: stopping run", "run_id", a.assign.GetRunId(), "reason", k.Revoked.GetReason())
			a.cancel(fmt.Errorf("%w: %s", runner.ErrLeaseLost, k.Revoked.GetReason()))
		}
		w.mu.Unlock()
	case *workv1.AttachResponse_Drain:
		w.mu.Lock()
		w.drained = k.Drain.GetDrained()
		w.exitWhenIdle = w.exitWhenIdle || k.Drain.GetExitWhenIdle()
		w.saveStateLocked()
		w.checkIdleLocked()
		w.mu.Unlock()
		w.log.Info("drain state changed by the control plane", "drained", k.Drain.GetDrained(), "exit_when_idle", k.Drain.GetExitWhenIdle())
		w.sendStatus()
	}
}

func (w *Worker) start(runCtx context.Context, a *workv1.Assign) {
	w.mu.Lock()
	if w.drained || w.unavailable != "" || len(w.runs) >= w.cfg.Slots {
		// Not ours to run: the lease expires and the gateway reports it.
		w.mu.Unlock()
		w.log.Error("assignment refused: no free slot", "run_id", a.GetRunId())
		return
	}
	ctx, cancel := context.WithCancelCause(runCtx)
	act := &active{assign: a, cancel: cancel, deadline: time.UnixMilli(a.GetDeadlineUnixMs())}
	if len(w.runs) == 0 {
		w.idle = make(chan struct{})
	}
	w.runs[a.GetLeaseId()] = act
	w.saveStateLocked()
	w.busy.Set(float64(len(w.runs)))
	w.wg.Add(1)
	poolID := w.poolID
	w.mu.Unlock()
	w.sendStatus()
	w.log.Info("run started", "run_id", a.GetRunId(), "lease_id", a.GetLeaseId(), "epoch", a.GetEpoch())

	go w.carry(ctx, cancel, act, func(ctx context.Context, progress func(string)) *workv1.Finish {
		if hx, ok := w.exec.(HandOffExecutor); ok {
			return hx.ExecuteFinish(ctx, poolID, a, progress)
		}
		return &workv1.Finish{Result: w.exec.Execute(ctx, a, progress)}
	})
}

// carry runs a taken run to its end and reports it.
func (w *Worker) carry(ctx context.Context, cancel context.CancelCauseFunc, act *active, run func(ctx context.Context, progress func(string)) *workv1.Finish) {
	defer w.wg.Done()
	a := act.assign
	progress := func(phase string) {
		w.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Progress{Progress: &workv1.Progress{LeaseId: a.GetLeaseId(), Epoch: a.GetEpoch(), Phase: phase}}})
	}
	report := run(ctx, progress)
	res := report.GetResult()
	cancel(nil)
	w.mu.Lock()
	delete(w.runs, a.GetLeaseId())
	w.saveStateLocked()
	w.busy.Set(float64(len(w.runs)))
	var fin *workv1.Finish
	if !act.revoked {
		fin = report
		fin.LeaseId, fin.Epoch = a.GetLeaseId(), a.GetEpoch()
		w.unreported[a.GetLeaseId()] = unreported{runID: a.GetRunId(), fin: fin}
	}
	w.checkIdleLocked()
	w.mu.Unlock()
	if report.GetUnconfirmed() != nil {
		w.log.Info("run stopped for confirmation", "run_id", a.GetRunId(), "state_key", report.GetUnconfirmed().GetStateKey(), "reported", fin != nil)
	} else {
		w.log.Info("run ended", "run_id", a.GetRunId(), "outcome", res.GetOutcome().String(), "reason", res.GetReason(), "reported", fin != nil)
	}
	if fin != nil {
		w.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Finish{Finish: fin}})
	}
	w.sendStatus()
}

func (w *Worker) checkIdleLocked() {
	if len(w.runs) == 0 {
		select {
		case <-w.idle:
		default:
			close(w.idle)
		}
		if w.drained && w.exitWhenIdle {
			select {
			case <-w.exitIdle:
			default:
				close(w.exitIdle)
			}
		}
	}
}

// heldLease is what the state file keeps of a running run.
type heldLease struct {
	RunID string `json:"run_id"`
	Epoch uint64 `json:"epoch"`
	// DeadlineUnixMs is the lease's deadline as last renewed: a run whose
	// lease expired while the executor was down is not re-adopted.
	DeadlineUnixMs int64 `json:"deadline_unix_ms,omitempty"`
	// Credential is the run's log credential (a serialized
	// logs.v1.RunCredential), so that the next life of the executor can
	// close the run's log.
	Credential []byte `json:"credential,omitempty"`
}

// state is the worker's state file: what must survive a restart.
type state struct {
	Drained      bool                 `json:"drained"`
	LeaseSeconds int64                `json:"lease_seconds,omitempty"`
	Leases       map[string]heldLease `json:"leases"`
}

// saveStateLocked writes the leases of the running runs and the drain
// state, atomically.
func (w *Worker) saveStateLocked() {
	if w.cfg.StateFile == "" {
		return
	}
	st := state{Drained: w.drained, LeaseSeconds: int64(w.leaseDur / time.Second), Leases: map[string]heldLease{}}
	for id, a := range w.runs {
		h := heldLease{RunID: a.assign.GetRunId(), Epoch: a.assign.GetEpoch(), DeadlineUnixMs: a.deadline.UnixMilli()}
		if c := a.assign.GetLogCredential(); c != nil {
			h.Credential, _ = proto.Marshal(c)
		}
		st.Leases[id] = h
	}
	b, _ := json.Marshal(st)
	if err := atomicfile.Write(w.cfg.StateFile, b, 0o600); err != nil {
		w.log.Warn("executor state not saved", "err", err)
	}
}

// loadState reads the state file; the format before drain persistence (a
// bare map of leases) is understood too.
func (w *Worker) loadState() (state, bool) {
	b, err := os.ReadFile(w.cfg.StateFile)
	if err != nil {
		return state{}, false
	}
	var st state
	if err := json.Unmarshal(b, &st); err == nil && st.Leases != nil {
		return st, true
	}
	old := map[string]heldLease{}
	if err := json.Unmarshal(b, &old); err != nil {
		w.log.Warn("executor state unreadable; ignored", "file", w.cfg.StateFile, "err", err)
		return state{}, false
	}
	return state{Leases: old}, true
}

// recoverOrphans takes up what an earlier life of this executor left: its
// drain state, and its runs — re-adopted when their phase still runs
// (Config.Readopt), reported lost otherwise.
func (w *Worker) recoverOrphans() {
	if w.cfg.StateFile == "" {
		return
	}
	st, ok := w.loadState()
	if !ok {
		return
	}
	w.drained = st.Drained
	if st.LeaseSeconds > 0 {
		w.leaseDur = time.Duration(st.LeaseSeconds) * time.Second
	}
	if w.drained {
		w.log.Info("drained before the restart: staying drained")
	}
	for id, h := range st.Leases {
		var cred *logsv1.RunCredential
		if len(h.Credential) > 0 {
			cred = &logsv1.RunCredential{}
			if err := proto.Unmarshal(h.Credential, cred); err != nil {
				w.log.Warn("the log credential of an orphaned run is unreadable", "run_id", h.RunID, "err", err)
				cred = nil
			}
		}
		expired := h.DeadlineUnixMs > 0 && time.Now().After(time.UnixMilli(h.DeadlineUnixMs))
		if expired {
			w.log.Warn("the lease of a run of an earlier life of this executor expired meanwhile", "run_id", h.RunID)
		}
		if w.cfg.Readopt != nil && !expired {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cont, err := w.cfg.Readopt(ctx, h.RunID, cred)
			cancel()
			if err == nil {
				w.adopt(&workv1.Assign{LeaseId: id, Epoch: h.Epoch, RunId: h.RunID, LogCredential: cred}, cont)
				continue
			}
			w.log.Warn("a run of an earlier life of this executor cannot be re-adopted", "run_id", h.RunID, "err", err)
		}
		res := &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_LOST, ExitCode: -1,
			Reason: "the executor stopped in the middle of the run; its containers were removed at restart"}
		if w.cfg.Orphaned != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var cred *logsv1.RunCredential
			if len(h.Credential) > 0 {
				cred = &logsv1.RunCredential{}
				if err := proto.Unmarshal(h.Credential, cred); err != nil {
					w.log.Warn("the log credential of an orphaned run is unreadable", "run_id", h.RunID, "err", err)
					cred = nil
				}
			}
			res.LogKey = w.cfg.Orphaned(ctx, h.RunID, cred)
			cancel()
		}
		w.unreported[id] = unreported{runID: h.RunID, fin: &workv1.Finish{LeaseId: id, Epoch: h.Epoch, Result: res}}
		w.log.Warn("reporting a run of an earlier life of this executor as lost", "run_id", h.RunID)
	}
	w.mu.Lock()
	w.saveStateLocked()
	w.mu.Unlock()
}

// Adopted returns the ids of the runs re-adopted at start (their containers
// must not be reaped).
func (w *Worker) Adopted() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []string
	for _, a := range w.runs {
		ids = append(ids, a.assign.GetRunId())
	}
	return ids
}

// adopt takes a re-adopted run into a slot; its lease is believed current
// until the gateway says otherwise or it is not renewed in time.
func (w *Worker) adopt(a *workv1.Assign, cont func(ctx context.Context, phase func(string)) *workv1.Finish) {
	ctx, cancel := context.WithCancelCause(context.Background())
	// Until the gateway renews it, the lease is believed to last as long as
	// a fresh one; the fence stops the run if no renewal comes.
	act := &active{assign: a, cancel: cancel, deadline: time.Now().Add(w.leaseDur)}
	w.mu.Lock()
	if len(w.runs) == 0 {
		w.idle = make(chan struct{})
	}
	w.runs[a.GetLeaseId()] = act
	w.wg.Add(1)
	w.mu.Unlock()
	w.log.Info("run re-adopted", "run_id", a.GetRunId(), "lease_id", a.GetLeaseId(), "epoch", a.GetEpoch())
	go w.carry(ctx, cancel, act, cont)
}

// admission polls the host's resources and reports changes to the gateway.
func (w *Worker) admission(ctx context.Context) {
	every := w.cfg.AdmissionInterval
	if every == 0 {
		every = 5 * time.Second
	}
	for {
		reason := w.cfg.Unavailable()
		w.mu.Lock()
		changed := reason != w.unavailable
		w.unavailable = reason
		w.mu.Unlock()
		if changed {
			if reason != "" {
				w.log.Warn("taking no new runs", "reason", reason)
			} else {
				w.log.Info("taking runs again")
			}
			w.sendStatus()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// fence stops runs whose lease deadline passed without a renewal.
func (w *Worker) fence(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		w.mu.Lock()
		for _, a := range w.runs {
			if !a.revoked && now.After(a.deadline) {
				a.revoked = true
				w.log.Error("lease not renewed before its deadline: stopping run", "run_id", a.assign.GetRunId())
				a.cancel(fmt.Errorf("%w: not renewed before its deadline", runner.ErrLeaseLost))
			}
		}
		w.mu.Unlock()
	}
}

func (w *Worker) send(m *workv1.AttachRequest) {
	w.mu.Lock()
	out := w.out
	if out == nil {
		// Between sessions: phase reports wait for the next one (a few per
		// run); a Finish is resent from `unreported`; a Status is rebuilt.
		if m.GetProgress() != nil && len(w.backlog) < 1024 {
			w.backlog = append(w.backlog, m)
		}
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	select {
	case out <- m:
	default:
		w.log.Warn("work stream is backed up; message dropped")
	}
}

func (w *Worker) sendStatus() {
	w.mu.Lock()
	free := max(w.cfg.Slots-len(w.runs), 0)
	st := &workv1.Status{FreeSlots: uint32(free), Drained: w.drained, UnavailableReason: w.unavailable}
	w.mu.Unlock()
	w.send(&workv1.AttachRequest{Kind: &workv1.AttachRequest_Status{Status: st}})
}

// Drain stops taking new runs; running ones go on.
func (w *Worker) Drain() {
	w.mu.Lock()
	w.drained = true
	w.saveStateLocked()
	w.checkIdleLocked()
	w.mu.Unlock()
	w.sendStatus()
}

// CancelAll stops every run (with its grace period).
func (w *Worker) CancelAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.runs {
		a.cancel(fmt.Errorf("%w: %s", runner.ErrCancelled, w.cfg.CancelReason))
	}
}

// Idle returns a channel closed when no run is active.
func (w *Worker) Idle() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.idle
}

// ExitRequested is closed when the control plane asked this worker to exit once
// idle (pool cycle) and it is.
func (w *Worker) ExitRequested() <-chan struct{} { return w.exitIdle }

// Reported waits until every finished run was acknowledged by the gateway, or
// ctx ends.
func (w *Worker) Reported(ctx context.Context) error {
	for {
		w.mu.Lock()
		n := len(w.unreported)
		w.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d run results not acknowledged by the gateway", n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
