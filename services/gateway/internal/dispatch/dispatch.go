// Package dispatch hands admitted runs to executors under leases: it serves
// hangar.work.v1.WorkService (executors attach; no per-executor configuration),
// keeps the queue of admitted runs, picks the attached executor with the most
// free slots for each, and follows every lease until the run's final event.
//
// Leases are fenced by an epoch that only grows per run: a renewal, progress or
// finish report with a stale lease is answered with LeaseRevoked, and the
// executor stops that run. A lease not renewed before its deadline ends the run
// as lost; it is never silently dropped nor run a second time.
//
// A tracked run that stops for confirmation (Finish.unconfirmed with its
// HandOff) is not finished: it is parked, with its record kept in the store
// as "unconfirmed". ConfirmRun (Confirm) queues it again; its next lease has a
// higher epoch and its Assign carries the resume state, the content key
// unwrapped with the pool's private key at that moment.
package dispatch

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"github.com/hangar-dev/hangar/services/gateway/internal/intake"
	"github.com/hangar-dev/hangar/services/gateway/internal/runstore"
)

// Events publishes run events (the gateway's outbox).
type Events interface {
	Run(runID string, trace map[string]string, ev *eventv1.Event)
	// Reserve takes the run's next sequence number without emitting
	// anything; RunAt emits an event with a reserved number (again, after a
	// restart: the event id is the same, receivers deduplicate it).
	Reserve(runID string) uint64
	RunAt(runID string, seq uint64, trace map[string]string, ev *eventv1.Event)
}

// ErrShuttingDown is returned by Admit once the dispatcher stops.
var ErrShuttingDown = errors.New("dispatch: the gateway is shutting down")

// Config tunes a Dispatcher.
type Config struct {
	PoolID string
	// PoolPublicKey is sent with each assignment (PKIX DER).
	PoolPublicKey []byte
	// LeaseDuration defaults to 30s; executors renew every third of it.
	LeaseDuration time.Duration
	// CancelGrace is the grace period between the stop signal and the kill.
	CancelGrace time.Duration
	Logger      *slog.Logger
	Registry    prometheus.Registerer
	// Store keeps queued and leased runs durably (nil: in memory only).
	Store Store
	// PoolKey unwraps the content key of a confirmed run's stored state.
	PoolKey *rsa.PrivateKey
	// Credentials issues the run credential sent with each Assign (ADR
	// 0009); nil (no TLS) sends none. With it, Attach takes the executor's
	// id from its certificate.
	Credentials CredentialIssuer
}

// CredentialIssuer signs run credentials (runcred.Issuer).
type CredentialIssuer interface {
	Issue(runID string, epoch uint64, executorID string) (*logsv1.RunCredential, error)
}

// ResumePhases are the phases a confirmed run resumes with.
var resumePhases = []string{"apply"}

// Store is the write-ahead store of runs in flight (runstore.Store).
type Store interface {
	Save(r *runstore.Record) error
	Delete(runID string) error
	Load() ([]*runstore.Record, []error)
}

// Dispatcher is the gateway's side of the work protocol.
type Dispatcher struct {
	workv1.UnimplementedWorkServiceServer

	cfg    Config
	events Events
	log    *slog.Logger
	now    func() time.Time

	mu        sync.Mutex
	queue     []*job
	runs      map[string]*lease // leased runs by run id
	parked    map[string]*job   // unconfirmed runs by run id
	epochs    map[string]uint64 // last epoch per run id still tracked
	executors map[string]*executor
	closed    bool

	queued     prometheus.Gauge
	queueTime  prometheus.Histogram
	slots      *prometheus.GaugeVec
	busy       *prometheus.GaugeVec
	lost       prometheus.Counter
	finishedBy *prometheus.CounterVec
	started    prometheus.Counter
	toStart    prometheus.Histogram
	duration   *prometheus.HistogramVec
	workers    *prometheus.GaugeVec
}

// job is a run in the dispatcher's hands: the run intake admitted and, once it
// stopped for confirmation, the hand-off of its stored workspace. A job queued
// with a hand-off resumes from it.
type job struct {
	*intake.Run
	handOff *workv1.HandOff
	// recorded: the run store holds a record of the run (see Admit).
	recorded bool
}

type lease struct {
	run      *job
	id       string
	epoch    uint64
	executor string
	deadline time.Time
	assigned time.Time
	running  bool // the executor reported its first phase
	// startedSeq is the sequence number of the lease's "started" event,
	// reserved and recorded with the lease before the event is emitted.
	startedSeq uint64
	cancel     bool // a cancel was requested
}

type executor struct {
	id          string
	slots       uint32
	free        uint32 // as last reported by the executor: a cap on top of slots minus leases
	drained     bool
	unavailable string
	metadata    map[string]string
	held        map[string]*lease // by lease id
	send        chan *workv1.AttachResponse
	gone        bool // send is closed
}

// New returns a Dispatcher.
func New(cfg Config, events Events) *Dispatcher {
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = 30 * time.Second
	}
	if cfg.CancelGrace == 0 {
		cfg.CancelGrace = 10 * time.Second
	}
	d := &Dispatcher{
		cfg: cfg, events: events, log: cfg.Logger, now: time.Now,
		runs: map[string]*lease{}, parked: map[string]*job{}, epochs: map[string]uint64{}, executors: map[string]*executor{},
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hangar_gateway_runs_queued",
			Help: "Admitted runs waiting for a free executor slot.",
		}),
		queueTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hangar_run_queue_seconds",
			Help:    "Time an admitted run waited for an executor slot.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}),
		slots: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hangar_executor_slots",
			Help: "Slots of each attached executor.",
		}, []string{"executor"}),
		busy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hangar_executor_slots_busy",
			Help: "Leased runs of each attached executor.",
		}, []string{"executor"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hangar_runs_lost_total",
			Help: "Runs whose executor stopped renewing their lease.",
		}),
		finishedBy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hangar_runs_finished_total",
			Help: "Runs that ended, by outcome.",
		}, []string{"outcome"}),
	}
	d.started = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hangar_runs_started_total",
		Help: "Runs assigned to an executor.",
	})
	d.toStart = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hangar_run_time_to_start_seconds",
		Help:    "Time from admission to the run's first phase on an executor.",
		Buckets: prometheus.ExponentialBuckets(0.005, 3, 12),
	})
	d.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hangar_run_duration_seconds",
		Help:    "Time from assignment to the final result of a run, by outcome.",
		Buckets: prometheus.ExponentialBuckets(0.5, 3, 12),
	}, []string{"outcome"})
	d.workers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hangar_workers",
		Help: "Executors attached to this gateway, by state (idle, busy, drained, unavailable).",
	}, []string{"state"})
	cfg.Registry.MustRegister(d.queued, d.queueTime, d.slots, d.busy, d.lost, d.finishedBy, d.started, d.toStart, d.duration, d.workers)
	for _, o := range []string{"finished", "failed", "stopped", "lost", "timed_out"} {
		d.finishedBy.WithLabelValues(o)
	}
	d.updateWorkersLocked()
	return d
}

// Admit queues an admitted run and assigns it if an executor has a free slot.
//
// A run that waits is recorded in the run store as queued before Admit
// returns. A run assigned at once is recorded once, with its lease, before
// its Assign is sent: the queued record would be replaced a moment later
// (two fsyncs of the file and its directory less on the way to the run's
// start). If that lease record cannot be written, the run is not assigned
// and finishes failed, as a run whose queued record cannot be written.
func (d *Dispatcher) Admit(_ context.Context, admitted *intake.Run) error {
	run := &job{Run: admitted}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrShuttingDown
	}
	if len(d.queue) > 0 || d.pickLocked() == nil {
		if err := d.saveLocked(run, nil); err != nil {
			return err
		}
	}
	d.queue = append(d.queue, run)
	d.queued.Set(float64(len(d.queue)))
	d.assignLocked()
	return nil
}

// Cancel stops a run: a queued run ends at once as stopped; a leased run is
// asked to stop on its executor. It reports whether the run was known.
func (d *Dispatcher) Cancel(runID, reason string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, r := range d.queue {
		if r.ID == runID {
			d.queue = append(d.queue[:i], d.queue[i+1:]...)
			d.queued.Set(float64(len(d.queue)))
			d.finishLocked(r, &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_STOPPED, ExitCode: -1, Reason: "cancelled before it started: " + reason})
			return true
		}
	}
	if run, ok := d.parked[runID]; ok {
		delete(d.parked, runID)
		d.finishLocked(run, &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_STOPPED, ExitCode: -1, Reason: "cancelled while waiting for confirmation: " + reason})
		return true
	}
	l, ok := d.runs[runID]
	if !ok {
		return false
	}
	l.cancel = true
	if ex, ok := d.executors[l.executor]; ok {
		d.sendLocked(ex, &workv1.AttachResponse{Kind: &workv1.AttachResponse_Cancel{Cancel: &workv1.Cancel{
			RunId: runID, LeaseId: l.id, GraceSeconds: uint32(d.cfg.CancelGrace / time.Second), Reason: reason,
		}}})
	}
	return true
}

// SetDrained drains or undrains an attached executor. It reports whether it is
// attached.
func (d *Dispatcher) SetDrained(executorID string, drained, exitWhenIdle bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	ex, ok := d.executors[executorID]
	if !ok {
		return false
	}
	ex.drained = drained
	d.updateWorkersLocked()
	d.sendLocked(ex, &workv1.AttachResponse{Kind: &workv1.AttachResponse_Drain{Drain: &workv1.Drain{Drained: drained, ExitWhenIdle: exitWhenIdle}}})
	if !drained {
		d.assignLocked()
	}
	return true
}

// Executors returns the attached executors, sorted by id.
func (d *Dispatcher) Executors() []*eventv1.ExecutorStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*eventv1.ExecutorStatus, 0, len(d.executors))
	for _, ex := range d.executors {
		st := eventv1.WorkerState_WORKER_STATE_IDLE
		switch {
		case ex.drained:
			st = eventv1.WorkerState_WORKER_STATE_DRAINED
		case len(ex.held) > 0:
			st = eventv1.WorkerState_WORKER_STATE_BUSY
		}
		out = append(out, &eventv1.ExecutorStatus{
			ExecutorId: ex.id, State: st, Slots: ex.slots, Busy: uint32(len(ex.held)),
			Metadata: ex.metadata, UnavailableReason: ex.unavailable,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExecutorId < out[j].ExecutorId })
	return out
}

// Counts returns the number of queued and leased runs.
func (d *Dispatcher) Counts() (queued, leased int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queue), len(d.runs)
}

// Serve expires leases until ctx is done, then refuses new runs.
func (d *Dispatcher) Serve(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.mu.Lock()
			d.closed = true
			d.mu.Unlock()
			return nil
		case <-t.C:
			d.expire()
		}
	}
}

func (d *Dispatcher) expire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for _, l := range d.runs {
		if now.After(l.deadline) {
			d.lost.Inc()
			d.log.Warn("lease expired: run lost", "run_id", l.run.ID, "executor", l.executor, "epoch", l.epoch)
			if ex, ok := d.executors[l.executor]; ok {
				delete(ex.held, l.id)
				d.sendLocked(ex, revoked(l, "lease expired"))
			}
			d.releaseLocked(l)
			d.finishLocked(l.run, &eventv1.RunFinished{
				Outcome: eventv1.Outcome_OUTCOME_LOST, ExitCode: -1,
				Reason: fmt.Sprintf("executor %s stopped renewing its lease", l.executor),
			})
		}
	}
	d.assignLocked()
}

// assignLocked gives queued runs, oldest first, to the available executor with
// the most free slots (ties: fewest leased runs, then id), so that runs spread.
func (d *Dispatcher) assignLocked() {
	defer d.updateWorkersLocked()
	for len(d.queue) > 0 {
		best := d.pickLocked()
		if best == nil {
			return
		}
		run := d.queue[0]
		d.queue = d.queue[1:]
		d.queued.Set(float64(len(d.queue)))
		d.queueTime.Observe(d.now().Sub(run.AdmittedAt).Seconds())
		resume, err := d.resumeState(run)
		if err != nil {
			d.log.Error("a confirmed run cannot resume: its state key does not unwrap", "run_id", run.ID, "err", err)
			d.finishLocked(run, &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1,
				Reason: fmt.Sprintf("stored state of run %s cannot be unlocked by this pool's key", run.ID)})
			continue
		}
		d.epochs[run.ID]++
		l := &lease{run: run, id: newLeaseID(), epoch: d.epochs[run.ID], executor: best.id, deadline: d.now().Add(d.cfg.LeaseDuration), assigned: d.now()}
		l.startedSeq = d.events.Reserve(run.ID)
		d.started.Inc()
		d.runs[run.ID] = l
		best.held[l.id] = l
		if err := d.saveLocked(run, l); err != nil {
			if !run.recorded {
				// Admit left the record to this save: the run is refused
				// as it would have been without a queued record, its
				// final event in the place reserved for "started".
				d.log.Error("run not recorded; it fails", "run_id", run.ID, "err", err)
				d.releaseLocked(l)
				delete(d.epochs, run.ID)
				d.finishedBy.WithLabelValues(outcomeName(eventv1.Outcome_OUTCOME_FAILED)).Inc()
				d.events.RunAt(run.ID, l.startedSeq, run.TraceContext, &eventv1.Event{Kind: &eventv1.Event_Finished{Finished: &eventv1.RunFinished{
					Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1, Reason: "could not queue the run: " + err.Error()}}})
				continue
			}
			d.log.Error("lease not recorded: a gateway restart now would report this run lost", "run_id", run.ID, "err", err)
		}
		d.busy.WithLabelValues(best.id).Set(float64(len(best.held)))
		var cred *logsv1.RunCredential
		if d.cfg.Credentials != nil {
			if cred, err = d.cfg.Credentials.Issue(run.ID, l.epoch, best.id); err != nil {
				// The executor cannot ship the run's log without it: the
				// run goes on, and logship refuses its output, which the
				// executor reports.
				d.log.Error("no run credential issued; logship will refuse this run's log", "run_id", run.ID, "err", err)
			}
		}
		d.sendLocked(best, &workv1.AttachResponse{Kind: &workv1.AttachResponse_Assign{Assign: &workv1.Assign{
			LeaseId: l.id, Epoch: l.epoch, DeadlineUnixMs: l.deadline.UnixMilli(), RunId: run.ID,
			Spec: run.Spec, TraceContext: run.TraceContext, PoolPublicKey: d.cfg.PoolPublicKey, Resume: resume,
			LogCredential: cred,
		}}})
		d.log.Info("run assigned", "run_id", run.ID, "executor", best.id, "lease_id", l.id, "epoch", l.epoch, "resumed", resume != nil)
		d.events.RunAt(run.ID, l.startedSeq, run.TraceContext, started(best.id))
	}
}

// pickLocked is the available executor with the most free slots (ties:
// fewest leased runs, then id), nil if none has a free slot.
func (d *Dispatcher) pickLocked() *executor {
	var best *executor
	for _, ex := range d.executors {
		if d.freeLocked(ex) == 0 {
			continue
		}
		if best == nil || d.freeLocked(ex) > d.freeLocked(best) ||
			(d.freeLocked(ex) == d.freeLocked(best) && (len(ex.held) < len(best.held) ||
				(len(ex.held) == len(best.held) && ex.id < best.id))) {
			best = ex
		}
	}
	return best
}

func started(executor string) *eventv1.Event {
	return &eventv1.Event{Kind: &eventv1.Event_Started{Started: &eventv1.RunStarted{ExecutorId: executor}}}
}

// resumeState is the Assign.resume of a confirmed run (nil for any other):
// its HandOff with the content key unwrapped by the pool key.
func (d *Dispatcher) resumeState(run *job) (*workv1.ResumeState, error) {
	h := run.handOff
	if h == nil {
		return nil, nil
	}
	key, err := sealedbox.UnwrapKey(d.cfg.PoolKey, h.GetWrappedKey())
	if err != nil {
		return nil, fmt.Errorf("dispatch: resume run %s: %w", run.ID, err)
	}
	return &workv1.ResumeState{
		StateKey: h.GetStateKey(), Key: key, Nonce: h.GetNonce(), Sha256: h.GetSha256(), Size: h.GetSize(),
		Phases: slices.Clone(resumePhases),
	}, nil
}

// Confirm queues an unconfirmed run again, to resume from its stored
// workspace under a new lease. It reports whether the run was waiting for
// confirmation here.
func (d *Dispatcher) Confirm(runID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	run, ok := d.parked[runID]
	if !ok || d.closed {
		return false
	}
	delete(d.parked, runID)
	if err := d.saveLocked(run, nil); err != nil {
		d.log.Error("confirmation not recorded: a gateway restart now would bring the run back unconfirmed", "run_id", runID, "err", err)
	}
	d.queue = append(d.queue, run)
	d.queued.Set(float64(len(d.queue)))
	d.log.Info("run confirmed", "run_id", runID)
	d.assignLocked()
	return true
}

// parkLocked keeps a run that stopped for confirmation, with its HandOff.
func (d *Dispatcher) parkLocked(run *job, h *workv1.HandOff) {
	run.handOff = h
	d.parked[run.ID] = run
	if err := d.saveLocked(run, nil); err != nil {
		d.log.Error("unconfirmed run not recorded: a gateway restart now would forget it", "run_id", run.ID, "err", err)
	}
}

// updateWorkersLocked recomputes hangar_workers.
func (d *Dispatcher) updateWorkersLocked() {
	counts := map[string]int{"idle": 0, "busy": 0, "drained": 0, "unavailable": 0}
	for _, ex := range d.executors {
		switch {
		case ex.drained:
			counts["drained"]++
		case ex.unavailable != "":
			counts["unavailable"]++
		case len(ex.held) > 0:
			counts["busy"]++
		default:
			counts["idle"]++
		}
	}
	for st, n := range counts {
		d.workers.WithLabelValues(st).Set(float64(n))
	}
}

func (d *Dispatcher) freeLocked(ex *executor) uint32 {
	if ex.drained || ex.unavailable != "" {
		return 0
	}
	held := uint32(len(ex.held))
	if held >= ex.slots {
		return 0
	}
	return min(ex.slots-held, ex.free)
}

func (d *Dispatcher) sendLocked(ex *executor, m *workv1.AttachResponse) {
	if ex.gone {
		return
	}
	select {
	case ex.send <- m:
	default:
		// The stream is hopelessly behind; it is closed and the executor
		// reattaches, listing its leases.
		d.log.Error("executor stream is not keeping up; dropping it", "executor", ex.id)
		ex.gone = true
		close(ex.send)
		delete(d.executors, ex.id)
	}
}

func (d *Dispatcher) releaseLocked(l *lease) {
	delete(d.runs, l.run.ID)
	if ex, ok := d.executors[l.executor]; ok {
		delete(ex.held, l.id)
		d.busy.WithLabelValues(ex.id).Set(float64(len(ex.held)))
	}
}

func (d *Dispatcher) finishLocked(run *job, res *eventv1.RunFinished) {
	delete(d.epochs, run.ID)
	d.forgetLocked(run.ID)
	d.finishedBy.WithLabelValues(outcomeName(res.Outcome)).Inc()
	d.events.Run(run.ID, run.TraceContext, &eventv1.Event{Kind: &eventv1.Event_Finished{Finished: res}})
}

// saveLocked records a queued or unconfirmed (l == nil) or leased run.
func (d *Dispatcher) saveLocked(run *job, l *lease) error {
	if d.cfg.Store == nil {
		return nil
	}
	rec := &runstore.Record{RunID: run.ID, Envelope: run.Envelope, ReceivedAt: run.ReceivedAt, AdmittedAt: run.AdmittedAt, Epoch: d.epochs[run.ID]}
	if l != nil {
		rec.LeaseID, rec.Epoch, rec.Executor, rec.StartedSeq = l.id, l.epoch, l.executor, l.startedSeq
	}
	if _, ok := d.parked[run.ID]; ok {
		rec.State = runstore.StateUnconfirmed
	}
	if h := run.handOff; h != nil {
		rec.HandOff = &runstore.HandOff{StateKey: h.GetStateKey(), WrappedKey: h.GetWrappedKey(), Nonce: h.GetNonce(), SHA256: h.GetSha256(), Size: h.GetSize()}
	}
	if err := d.cfg.Store.Save(rec); err != nil {
		return fmt.Errorf("dispatch: record run %s: %w", run.ID, err)
	}
	run.recorded = true
	return nil
}

func (d *Dispatcher) forgetLocked(runID string) {
	if d.cfg.Store == nil {
		return
	}
	if err := d.cfg.Store.Delete(runID); err != nil {
		d.log.Warn("ended run not removed from the run store", "run_id", runID, "err", err)
	}
}

func revoked(l *lease, reason string) *workv1.AttachResponse {
	return &workv1.AttachResponse{Kind: &workv1.AttachResponse_Revoked{Revoked: &workv1.LeaseRevoked{LeaseId: l.id, Epoch: l.epoch, Reason: reason}}}
}

func newLeaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func outcomeName(o eventv1.Outcome) string {
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
		return "timed_out"
	}
	return "unknown"
}
