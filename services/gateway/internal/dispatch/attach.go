package dispatch

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
)

// sendBuffer bounds what may wait for one executor's stream.
const sendBuffer = 256

// executorID is the attaching executor's id: with TLS (Config.Credentials
// set), the id in its certificate, which Hello.executor_id may repeat but
// not contradict; without TLS, Hello.executor_id.
func (d *Dispatcher) executorID(ctx context.Context, hello *workv1.Hello) (string, error) {
	if d.cfg.Credentials == nil {
		if hello.GetExecutorId() == "" {
			return "", status.Error(codes.InvalidArgument, "Hello.executor_id is empty")
		}
		return hello.GetExecutorId(), nil
	}
	peer, ok := serve.PeerIdentity(ctx)
	if !ok || peer.Role != tlsconfig.RoleExecutor {
		return "", status.Error(codes.PermissionDenied, "Attach needs an executor certificate of the pool")
	}
	if claimed := hello.GetExecutorId(); claimed != "" && claimed != peer.ID {
		d.log.Warn("refused an executor whose Hello disagrees with its certificate", "hello_executor_id", claimed, "certificate", peer.String())
		return "", status.Errorf(codes.PermissionDenied, "Hello.executor_id %q disagrees with the certificate's executor id %q (%s)", claimed, peer.ID, peer)
	}
	return peer.ID, nil
}

// Attach implements WorkService.Attach: one stream per executor.
func (d *Dispatcher) Attach(stream workv1.WorkService_AttachServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.FailedPrecondition, "the first message on Attach must be a Hello")
	}
	id, err := d.executorID(stream.Context(), hello)
	if err != nil {
		return err
	}
	if hello.GetSlots() == 0 {
		return status.Error(codes.InvalidArgument, "Hello.slots must be at least 1")
	}

	ex := &executor{
		id: id, slots: hello.GetSlots(), free: hello.GetSlots(), drained: hello.GetDrained(),
		metadata: hello.GetMetadata(), held: map[string]*lease{}, send: make(chan *workv1.AttachResponse, sendBuffer),
	}
	d.mu.Lock()
	if _, dup := d.executors[ex.id]; dup {
		d.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "an executor with id %q is already attached", ex.id)
	}
	d.executors[ex.id] = ex
	d.slots.WithLabelValues(ex.id).Set(float64(ex.slots))
	d.sendLocked(ex, &workv1.AttachResponse{Kind: &workv1.AttachResponse_Welcome{Welcome: &workv1.Welcome{
		PoolId: d.cfg.PoolID, LeaseSeconds: uint32(d.cfg.LeaseDuration.Seconds()),
	}}})
	d.readoptLocked(ex, hello.GetHeld())
	d.assignLocked()
	d.mu.Unlock()
	d.log.Info("executor attached", "executor", ex.id, "slots", ex.slots, "held", len(hello.GetHeld()))

	defer d.detach(ex)

	sendErr := make(chan error, 1)
	go func() {
		for m := range ex.send {
			if err := stream.Send(m); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- status.Error(codes.ResourceExhausted, "executor stream fell behind")
	}()
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			d.handle(ex, m)
		}
	}()
	select {
	case err := <-sendErr:
		return err
	case err := <-recvErr:
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-stream.Context().Done():
		return nil
	}
}

// readoptLocked keeps the leases an executor still holds after a reconnect when
// they are current, and revokes the others.
func (d *Dispatcher) readoptLocked(ex *executor, held []*workv1.HeldLease) {
	now := d.now()
	for _, h := range held {
		l, ok := d.runs[h.GetRunId()]
		if ok && l.id == h.GetLeaseId() && l.epoch == h.GetEpoch() && !now.After(l.deadline) {
			if old, ok := d.executors[l.executor]; ok && old != ex {
				delete(old.held, l.id)
			}
			l.executor = ex.id
			ex.held[l.id] = l
			continue
		}
		d.sendLocked(ex, &workv1.AttachResponse{Kind: &workv1.AttachResponse_Revoked{Revoked: &workv1.LeaseRevoked{
			LeaseId: h.GetLeaseId(), Epoch: h.GetEpoch(), Reason: "lease is not current",
		}}})
	}
	d.busy.WithLabelValues(ex.id).Set(float64(len(ex.held)))
}

// detach forgets the executor; its leases stay until their deadline, so that it
// can reattach and keep them.
func (d *Dispatcher) detach(ex *executor) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.executors[ex.id]; ok && cur == ex {
		delete(d.executors, ex.id)
	}
	if !ex.gone {
		ex.gone = true
		close(ex.send)
	}
	d.slots.DeleteLabelValues(ex.id)
	d.busy.DeleteLabelValues(ex.id)
	d.updateWorkersLocked()
	d.log.Info("executor detached", "executor", ex.id, "leases_kept_until_deadline", len(ex.held))
}

func (d *Dispatcher) handle(ex *executor, m *workv1.AttachRequest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch k := m.Kind.(type) {
	case *workv1.AttachRequest_Status:
		ex.free = k.Status.GetFreeSlots()
		ex.drained = k.Status.GetDrained()
		ex.unavailable = k.Status.GetUnavailableReason()
		d.assignLocked()
	case *workv1.AttachRequest_Renew:
		l := d.currentLocked(ex, k.Renew.GetLeaseId(), k.Renew.GetEpoch())
		if l == nil {
			return
		}
		l.deadline = d.now().Add(d.cfg.LeaseDuration)
		d.sendLocked(ex, &workv1.AttachResponse{Kind: &workv1.AttachResponse_Renewed{Renewed: &workv1.LeaseRenewed{
			LeaseId: l.id, Epoch: l.epoch, DeadlineUnixMs: l.deadline.UnixMilli(),
		}}})
	case *workv1.AttachRequest_Progress:
		l := d.currentLocked(ex, k.Progress.GetLeaseId(), k.Progress.GetEpoch())
		if l == nil {
			return
		}
		if !l.running {
			l.running = true
			d.toStart.Observe(d.now().Sub(l.run.AdmittedAt).Seconds())
		}
		d.events.Run(l.run.ID, l.run.TraceContext, &eventv1.Event{Kind: &eventv1.Event_Phase{Phase: &eventv1.RunPhase{Phase: k.Progress.GetPhase()}}})
	case *workv1.AttachRequest_Finish:
		l := d.currentLocked(ex, k.Finish.GetLeaseId(), k.Finish.GetEpoch())
		if l == nil {
			return
		}
		d.releaseLocked(l)
		if u := k.Finish.GetUnconfirmed(); u != nil && k.Finish.GetHandOff().GetStateKey() != "" && l.run.handOff == nil {
			// Not finished: parked until ConfirmRun, its epoch kept.
			d.parkLocked(l.run, k.Finish.GetHandOff())
			d.log.Info("run waits for confirmation", "run_id", l.run.ID, "state_key", u.GetStateKey())
			d.events.Run(l.run.ID, l.run.TraceContext, &eventv1.Event{Kind: &eventv1.Event_Unconfirmed{Unconfirmed: u}})
		} else if k.Finish.GetUnconfirmed() != nil {
			reason := "the executor stopped the run for confirmation without storing its state"
			if l.run.handOff != nil {
				reason = "the executor stopped a confirmed run for confirmation again"
			}
			d.finishLocked(l.run, &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1, Reason: reason})
		} else {
			res := k.Finish.GetResult()
			if res == nil {
				res = &eventv1.RunFinished{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: -1, Reason: "executor reported no result"}
			}
			d.duration.WithLabelValues(outcomeName(res.GetOutcome())).Observe(d.now().Sub(l.assigned).Seconds())
			d.finishLocked(l.run, res)
		}
		d.sendLocked(ex, revoked(l, "finished"))
		d.assignLocked()
	case *workv1.AttachRequest_Hello:
		d.log.Warn("second Hello on an attached stream ignored", "executor", ex.id)
	}
}

// currentLocked returns the lease if (lease id, epoch) is the run's current lease
// held by ex, and otherwise tells the executor the lease is revoked.
func (d *Dispatcher) currentLocked(ex *executor, leaseID string, epoch uint64) *lease {
	l, ok := ex.held[leaseID]
	if ok && l.epoch == epoch && d.runs[l.run.ID] == l {
		return l
	}
	d.sendLocked(ex, &workv1.AttachResponse{Kind: &workv1.AttachResponse_Revoked{Revoked: &workv1.LeaseRevoked{
		LeaseId: leaseID, Epoch: epoch, Reason: "stale lease",
	}}})
	return nil
}
