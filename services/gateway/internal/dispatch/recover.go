package dispatch

import (
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/services/gateway/internal/intake"
	"github.com/hangar-dev/hangar/services/gateway/internal/runstore"
)

// Reopen opens a stored envelope again as of the time it was received (it may
// have expired since): its decrypted spec and its trace context.
type Reopen func(envelope []byte, receivedAt time.Time) (*runv1.RunSpec, map[string]string, error)

// EnvelopeReopener is the Reopen of a gateway: o verifies and decrypts as if
// the time were the moment the envelope was received.
func EnvelopeReopener(o *runenvelope.Opener) Reopen {
	return func(envelope []byte, receivedAt time.Time) (*runv1.RunSpec, map[string]string, error) {
		at := *o
		at.Now = func() time.Time { return receivedAt }
		v, err := at.Verify(envelope)
		if err != nil {
			return nil, nil, err
		}
		spec, err := at.Decrypt(v)
		if err != nil {
			return nil, nil, err
		}
		return spec, v.TraceContext, nil
	}
}

// Recover puts back the runs a previous life of this gateway had admitted and
// not seen end, from the store: a queued run is queued again; a leased run is
// leased to its executor until a new deadline, so that the executor can
// reattach and keep it (Hello.held) or, if it does not, the lease expires and
// the run ends as lost; a run waiting for confirmation waits again. A record
// whose envelope no longer opens ends the run as failed. Call it before Serve
// and before the first Admit.
func (d *Dispatcher) Recover(reopen Reopen) {
	if d.cfg.Store == nil {
		return
	}
	recs, errs := d.cfg.Store.Load()
	for _, err := range errs {
		d.log.Error("a run record could not be read", "err", err)
	}
	for _, r := range recs {
		spec, tc, err := reopen(r.Envelope, r.ReceivedAt)
		if err != nil {
			d.log.Error("a recovered run could not be opened again; it fails", "run_id", r.RunID, "err", err)
			d.events.Run(r.RunID, nil, &eventv1.Event{Kind: &eventv1.Event_Finished{Finished: &eventv1.RunFinished{
				Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1, Reason: "the gateway restarted and could not recover the run",
			}}})
			if err := d.cfg.Store.Delete(r.RunID); err != nil {
				d.log.Warn("unrecoverable run not removed from the run store", "run_id", r.RunID, "err", err)
			}
			continue
		}
		run := &job{
			Run:      &intake.Run{ID: r.RunID, Spec: spec, TraceContext: tc, AdmittedAt: r.AdmittedAt, Envelope: r.Envelope, ReceivedAt: r.ReceivedAt},
			handOff:  handOffFromRecord(r.HandOff),
			recorded: true,
		}
		if r.State == runstore.StateUnconfirmed && run.handOff != nil {
			d.restore(run, "", r.Epoch, "", 0, true)
			d.log.Info("run waiting for confirmation recovered after a restart", "run_id", r.RunID)
			continue
		}
		d.restore(run, r.LeaseID, r.Epoch, r.Executor, r.StartedSeq, false)
		if r.LeaseID != "" && r.StartedSeq > 0 {
			// The lease was recorded before its "started" event was emitted;
			// a stop in between would lose the event. Announce it again with
			// its number: a copy already published has the same id.
			d.events.RunAt(r.RunID, r.StartedSeq, tc, started(r.Executor))
		}
		d.log.Info("run recovered after a restart", "run_id", r.RunID, "leased", r.LeaseID != "", "executor", r.Executor, "resumed", run.handOff != nil)
	}
}

// restore puts back one recovered run: parked, queued (no lease) or leased.
func (d *Dispatcher) restore(run *job, leaseID string, epoch uint64, executor string, startedSeq uint64, parked bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if epoch > 0 {
		d.epochs[run.ID] = epoch
	}
	switch {
	case parked:
		d.parked[run.ID] = run
	case leaseID == "":
		d.queue = append(d.queue, run)
		d.queued.Set(float64(len(d.queue)))
	default:
		d.runs[run.ID] = &lease{run: run, id: leaseID, epoch: epoch, executor: executor,
			deadline: d.now().Add(d.cfg.LeaseDuration), assigned: d.now(), running: true, startedSeq: startedSeq}
	}
}

// handOffFromRecord converts a stored hand-off back (nil for nil).
func handOffFromRecord(h *runstore.HandOff) *workv1.HandOff {
	if h == nil {
		return nil
	}
	return &workv1.HandOff{StateKey: h.StateKey, WrappedKey: h.WrappedKey, Nonce: h.Nonce, Sha256: h.SHA256, Size: h.Size}
}
