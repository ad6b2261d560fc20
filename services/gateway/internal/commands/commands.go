// Package commands carries out the signed commands of the control plane
// (cancel, confirm, drain, undrain, cycle) and answers each with a
// CommandResult event: applied, or refused and why. A command id is applied at
// most once: ids are recorded persistently until well after the command's
// expiry, and a copy is refused as replayed.
package commands

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/services/gateway/internal/dispatch"
)

// Dispatcher is the part of the dispatcher commands act on.
type Dispatcher interface {
	Lookup(runID string) (state dispatch.RunState, resumed bool)
	Cancel(runID, reason string) bool
	Confirm(runID string) bool
	SetDrained(executorID string, drained, exitWhenIdle bool) bool
	Executors() []*eventv1.ExecutorStatus
}

// Runs is what the gateway remembers of the runs it received (the seen store).
type Runs interface {
	Known(runID string) bool
	Decided(runID string) bool
}

// IDs remembers command ids across restarts (a seen store of its own).
type IDs interface {
	Record(id string, forgetAfter time.Time) (bool, error)
	Done(id string) error
}

// Answers publishes command results (the gateway's outbox).
type Answers interface {
	CommandResult(res *eventv1.CommandResult)
}

// Deps are what a Handler works with.
type Deps struct {
	Opener     *runenvelope.Opener
	Dispatcher Dispatcher
	Runs       Runs
	IDs        IDs
	Answers    Answers
	Logger     *slog.Logger
	Registry   prometheus.Registerer
}

// Handler handles command payloads. Handle is safe for concurrent use.
type Handler struct {
	d       Deps
	results *prometheus.CounterVec
}

// New returns a Handler.
func New(d Deps) *Handler {
	h := &Handler{d: d, results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hangar_gateway_commands_total",
		Help: "Commands received, by kind and result (applied, or the refusal).",
	}, []string{"kind", "result"})}
	d.Registry.MustRegister(h.results)
	return h
}

// Handle verifies, records, applies and answers one command payload. It
// returns an error only when the command id could not be recorded durably:
// the caller then must not acknowledge the MQTT message, so that the broker
// delivers it again.
func (h *Handler) Handle(payload []byte) error {
	cmd, err := h.d.Opener.VerifyCommand(payload)
	if err != nil {
		h.refuseUnverified(err)
		return nil
	}
	id := cmd.GetCommandId()
	kind := kindName(cmd)
	forget := time.UnixMilli(cmd.GetExpiresAtUnixMs()).Add(h.d.Opener.ClockSkew + time.Hour)
	first, err := h.d.IDs.Record(id, forget)
	if err != nil {
		return fmt.Errorf("commands: record command %s: %w", id, err)
	}
	res := &eventv1.CommandResult{CommandId: id}
	switch k := cmd.Kind.(type) {
	case *eventv1.Command_Cancel:
		res.RunId = k.Cancel.GetRunId()
	case *eventv1.Command_Confirm:
		res.RunId = k.Confirm.GetRunId()
	case *eventv1.Command_Drain:
		res.TargetWorkerId = k.Drain.GetWorkerId()
	case *eventv1.Command_Undrain:
		res.TargetWorkerId = k.Undrain.GetWorkerId()
	}
	if !first {
		refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_REPLAYED, "command %s was already handled by this gateway; not applied again", id)
		h.answer(kind, res)
		return nil
	}
	h.apply(cmd, res)
	h.answer(kind, res)
	if err := h.d.IDs.Done(id); err != nil {
		h.d.Logger.Error("command handled but not marked done; a redelivery after a restart would apply it again", "command_id", id, "err", err)
	}
	return nil
}

func (h *Handler) apply(cmd *eventv1.Command, res *eventv1.CommandResult) {
	d := h.d.Dispatcher
	switch k := cmd.Kind.(type) {
	case *eventv1.Command_Cancel:
		run := k.Cancel.GetRunId()
		st, _ := d.Lookup(run)
		if st == dispatch.RunUnknown {
			h.refuseAbsent(res, run)
			return
		}
		if !d.Cancel(run, "cancelled by the control plane") {
			h.refuseAbsent(res, run)
			return
		}
		if st == dispatch.RunLeased {
			applied(res, "run %s: stop sent to its executor", run)
		} else {
			applied(res, "run %s was %s; it ends as stopped", run, st)
		}
	case *eventv1.Command_Confirm:
		run := k.Confirm.GetRunId()
		switch st, resumed := d.Lookup(run); {
		case st == dispatch.RunUnknown:
			h.refuseAbsent(res, run)
		case st == dispatch.RunWaiting:
			if d.Confirm(run) {
				applied(res, "run %s confirmed; it resumes with apply", run)
			} else {
				refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_NOT_WAITING_FOR_CONFIRMATION, "run %s stopped waiting for confirmation meanwhile", run)
			}
		case resumed:
			refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_ALREADY_CONFIRMED, "run %s was already confirmed and is %s", run, st)
		default:
			refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_NOT_WAITING_FOR_CONFIRMATION, "run %s is %s; it has not stopped for confirmation", run, st)
		}
	case *eventv1.Command_Drain:
		h.drain(res, k.Drain.GetWorkerId(), true)
	case *eventv1.Command_Undrain:
		h.drain(res, k.Undrain.GetWorkerId(), false)
	case *eventv1.Command_Cycle:
		n := 0
		for _, ex := range d.Executors() {
			if d.SetDrained(ex.GetExecutorId(), true, true) {
				n++
			}
		}
		applied(res, "%d executor(s) drained; each exits once idle", n)
	default:
		refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_INVALID, "command %s is of a kind this gateway does not support", cmd.GetCommandId())
	}
}

func (h *Handler) drain(res *eventv1.CommandResult, executor string, drained bool) {
	verb := "drained"
	if !drained {
		verb = "undrained"
	}
	if !h.d.Dispatcher.SetDrained(executor, drained, false) {
		refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_WORKER, "no executor %q is attached to this gateway", executor)
		return
	}
	applied(res, "executor %s %s", executor, verb)
}

// refuseAbsent refuses a run command for a run the dispatcher does not hold:
// it ended here, it is still in the intake, or this gateway never had it.
func (h *Handler) refuseAbsent(res *eventv1.CommandResult, run string) {
	switch {
	case h.d.Runs.Decided(run):
		refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_ALREADY_FINISHED, "run %s has already ended", run)
	case h.d.Runs.Known(run):
		refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_RUN, "run %s is still being admitted; send the command again in a moment", run)
	default:
		refuse(res, eventv1.CommandRefusal_COMMAND_REFUSAL_UNKNOWN_RUN, "run %s is unknown to this gateway", run)
	}
}

// refuseUnverified answers a command that did not verify, when a valid
// signature vouches for its id; otherwise it only logs.
func (h *Handler) refuseUnverified(err error) {
	var rej *runenvelope.RejectError
	if !errors.As(err, &rej) || !rej.SignatureValid || rej.CommandID == "" {
		h.results.WithLabelValues("unknown", "unverified").Inc()
		h.d.Logger.Warn("command rejected", "err", err)
		return
	}
	res := &eventv1.CommandResult{CommandId: rej.CommandID}
	reason := eventv1.CommandRefusal_COMMAND_REFUSAL_INVALID
	switch rej.Reason {
	case eventv1.RejectReason_REJECT_REASON_EXPIRED, eventv1.RejectReason_REJECT_REASON_WRONG_POOL:
		reason = eventv1.CommandRefusal_COMMAND_REFUSAL_EXPIRED
	}
	refuse(res, reason, "command %s refused: %s", rej.CommandID, rej.Detail)
	h.answer("unknown", res)
}

func (h *Handler) answer(kind string, res *eventv1.CommandResult) {
	result := "applied"
	if res.GetStatus() == eventv1.CommandStatus_COMMAND_STATUS_REFUSED {
		result = refusalName(res.GetRefusal())
		h.d.Logger.Warn("command refused", "command_id", res.GetCommandId(), "kind", kind, "refusal", result, "detail", res.GetMessage())
	} else {
		h.d.Logger.Info("command applied", "command_id", res.GetCommandId(), "kind", kind, "detail", res.GetMessage())
	}
	h.results.WithLabelValues(kind, result).Inc()
	h.d.Answers.CommandResult(res)
}

func applied(res *eventv1.CommandResult, format string, args ...any) {
	res.Status = eventv1.CommandStatus_COMMAND_STATUS_APPLIED
	res.Message = fmt.Sprintf(format, args...)
}

func refuse(res *eventv1.CommandResult, why eventv1.CommandRefusal, format string, args ...any) {
	res.Status = eventv1.CommandStatus_COMMAND_STATUS_REFUSED
	res.Refusal = why
	res.Message = fmt.Sprintf(format, args...)
}

func kindName(cmd *eventv1.Command) string {
	switch cmd.Kind.(type) {
	case *eventv1.Command_Cancel:
		return "cancel"
	case *eventv1.Command_Confirm:
		return "confirm"
	case *eventv1.Command_Drain:
		return "drain"
	case *eventv1.Command_Undrain:
		return "undrain"
	case *eventv1.Command_Cycle:
		return "cycle"
	}
	return "unknown"
}

// refusalName is the refusal's enum name without its prefix, lower case
// (e.g. "unknown_run").
func refusalName(r eventv1.CommandRefusal) string {
	name := r.String()
	const prefix = "COMMAND_REFUSAL_"
	if len(name) > len(prefix) {
		name = name[len(prefix):]
	}
	out := []byte(name)
	for i, c := range out {
		if 'A' <= c && c <= 'Z' {
			out[i] = c + 'a' - 'A'
		}
	}
	return string(out)
}
