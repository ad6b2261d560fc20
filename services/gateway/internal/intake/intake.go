// Package intake turns a run envelope received over MQTT into a decision: it
// verifies and decrypts the envelope, drops a second delivery of a run, asks the
// policy service whether the run may start, and publishes the events that say
// what happened (received, then denied or admitted; or the envelope's rejection).
package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
	"github.com/hangar-dev/hangar/platform/telemetry"
)

// Policy decides whether a run may start (the policy service's client).
type Policy interface {
	Evaluate(ctx context.Context, in *policyv1.EvaluateRequest, opts ...grpc.CallOption) (*policyv1.EvaluateResponse, error)
}

// Seen remembers run ids across restarts.
type Seen interface {
	Record(runID string, forgetAfter time.Time) (bool, error)
	// Known reports whether the run id is remembered (from memory, without
	// a write).
	Known(runID string) bool
	Done(runID string) error
	// Decided reports whether the run's decision is recorded; a known run
	// that is not decided is in the intake right now.
	Decided(runID string) bool
}

// Events publishes events to the control plane.
type Events interface {
	Run(runID string, trace map[string]string, ev *eventv1.Event)
	Rejected(payload []byte, runID string, rej *eventv1.EnvelopeRejected)
	RejectedDigest(sum [32]byte, runID string, rej *eventv1.EnvelopeRejected)
	// Announced returns the sequence number of the run's last event taken
	// so far, by this life of the gateway or (journaled) by an earlier one;
	// 0 if none, or once the run's final event was taken.
	Announced(runID string) uint64
}

// Queue takes admitted runs for dispatch to executors.
type Queue interface {
	Admit(ctx context.Context, run *Run) error
	// Known reports whether the run is queued or leased (e.g. recovered after
	// a restart), so that its redelivery is not taken for a new run.
	Known(runID string) bool
}

// Run is an admitted run.
type Run struct {
	ID           string
	Spec         *runv1.RunSpec
	TraceContext map[string]string
	AdmittedAt   time.Time
	// Envelope is the payload as received (signed, encrypted), which the
	// dispatcher keeps durably instead of the decrypted spec.
	Envelope   []byte
	ReceivedAt time.Time
}

// Intake handles envelopes. Handle is safe for concurrent use.
type Intake struct {
	opener        *runenvelope.Opener
	seen          Seen
	policy        Policy
	events        Events
	queue         Queue
	metadata      map[string]string
	policyTimeout time.Duration
	tracer        trace.Tracer
	prop          propagation.TextMapPropagator
	log           *slog.Logger
	now           func() time.Time

	results     *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	redelivered prometheus.Counter
	duration    prometheus.Histogram
}

// Deps are what an Intake works with.
type Deps struct {
	Opener        *runenvelope.Opener
	Seen          Seen
	Policy        Policy
	Events        Events
	Queue         Queue
	Metadata      map[string]string
	PolicyTimeout time.Duration
	Tracer        trace.Tracer
	Propagator    propagation.TextMapPropagator
	Logger        *slog.Logger
	Registry      prometheus.Registerer
}

// New returns an Intake.
func New(d Deps) *Intake {
	in := &Intake{
		opener: d.Opener, seen: d.Seen, policy: d.Policy, events: d.Events, queue: d.Queue,
		metadata: d.Metadata, policyTimeout: d.PolicyTimeout, tracer: d.Tracer, prop: d.Propagator,
		log: d.Logger, now: time.Now,
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hangar_gateway_runs_total",
			Help: "Runs received by the gateway, by result of intake (admitted, denied, failed).",
		}, []string{"result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hangar_gateway_envelopes_rejected_total",
			Help: "Envelopes refused before a run was received, by reason.",
		}, []string{"reason"}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hangar_gateway_envelopes_redelivered_total",
			Help: "Copies of runs the gateway still held (MQTT redeliveries), dropped without an event.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hangar_gateway_intake_seconds",
			Help:    "Time from an envelope's arrival to its decision (verify, decrypt, policy).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if in.policyTimeout == 0 {
		in.policyTimeout = 30 * time.Second
	}
	for _, r := range []string{"admitted", "denied", "failed"} {
		in.results.WithLabelValues(r)
	}
	for v := range eventv1.RejectReason_name {
		if r := eventv1.RejectReason(v); r != eventv1.RejectReason_REJECT_REASON_UNSPECIFIED {
			in.rejected.WithLabelValues(runenvelope.ReasonName(r))
		}
	}
	d.Registry.MustRegister(in.results, in.rejected, in.redelivered, in.duration)
	return in
}

// Handle processes one envelope. It returns an error only when the envelope could
// not be recorded durably; the caller then must not acknowledge the MQTT message,
// so that the broker delivers it again.
func (in *Intake) Handle(ctx context.Context, payload []byte) error {
	start := in.now()
	defer func() { in.duration.Observe(in.now().Sub(start).Seconds()) }()

	v, err := in.opener.Verify(payload)
	if err != nil {
		in.reject(payload, err)
		return nil
	}
	ctx = telemetry.Extract(ctx, in.prop, v.TraceContext)
	ctx, span := in.tracer.Start(ctx, "gateway.intake", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("hangar.run_id", v.RunID)))
	defer span.End()
	tc := telemetry.Inject(ctx, in.prop)

	// Remember the id until well after the envelope expires; a later copy is then
	// refused as expired rather than handled again.
	forget := time.UnixMilli(v.Envelope.GetExpiresAtUnixMs()).Add(in.opener.ClockSkew + time.Hour)
	// A run id not seen before is decrypted (the pool key's private
	// operation) while its record is made durable: neither waits for the
	// other. A copy of a known one is decided by the seen store first, as
	// before, so that a replayed envelope costs no private-key operation.
	var decrypted chan struct{}
	var spec *runv1.RunSpec
	var decryptErr error
	if !in.seen.Known(v.RunID) {
		decrypted = make(chan struct{})
		go func() {
			defer close(decrypted)
			spec, decryptErr = in.opener.Decrypt(v)
		}()
	}
	first, err := in.seen.Record(v.RunID, forget)
	if decrypted != nil {
		<-decrypted
	}
	if err != nil {
		span.SetStatus(codes.Error, "seen store")
		return fmt.Errorf("intake: record run %s: %w", v.RunID, err)
	}
	if !first {
		if in.queue.Known(v.RunID) || !in.seen.Decided(v.RunID) {
			// A QoS 1 redelivery (or a copy) of a run this gateway still holds:
			// being decided, queued, leased or waiting for confirmation. The
			// run goes on; the copy is dropped without a word to the control
			// plane, which would otherwise take it for the run's end.
			span.SetAttributes(attribute.String("hangar.result", "redelivered"))
			in.redelivered.Inc()
			in.log.Info("copy of a run already in hand dropped", "run_id", v.RunID)
			return nil
		}
		// The run has ended here (denied, failed or finished): this copy is a
		// replay and is refused.
		span.SetAttributes(attribute.String("hangar.result", "replayed"))
		in.reject(payload, &runenvelope.RejectError{
			Reason: eventv1.RejectReason_REJECT_REASON_REPLAYED, RunID: v.RunID, SignatureValid: true,
			Detail: "run " + v.RunID + " was already received by this pool and has ended",
		})
		return nil
	}

	// From here on, the run is decided exactly once: the decision is recorded
	// (Done) once its events are journaled and an admitted run is stored.
	decided := true
	defer func() {
		if !decided {
			return
		}
		if err := in.seen.Done(v.RunID); err != nil {
			in.log.Error("decision not recorded in the seen store", "run_id", v.RunID, "err", err)
		}
	}()
	if in.queue.Known(v.RunID) {
		// Redelivered after a restart that had already stored the run.
		in.log.Info("redelivered run already recovered; nothing to do", "run_id", v.RunID)
		return nil
	}
	// What an earlier life of the gateway announced of this run before it
	// stopped in the middle of the intake (killed, or shut down before the
	// run was stored): the intake's events are the run's first two, so 1 is
	// "received", and 2 is "admitted" (a denial or failure is final and ends
	// the numbering, which leaves 0). This life goes on from there and never
	// announces the run received or admitted twice. In a first intake it is
	// 0: the seen store lets one delivery of a run id this far.
	announced := in.events.Announced(v.RunID)
	if decrypted == nil {
		spec, decryptErr = in.opener.Decrypt(v)
	}
	if decryptErr == nil {
		decryptErr = validSpec(v.RunID, spec)
	}
	if decryptErr != nil && announced > 0 {
		// Opened before, not now (e.g. the pool key changed meanwhile): the
		// run was announced, so it ends with a final event.
		span.SetStatus(codes.Error, "reopen")
		in.results.WithLabelValues("failed").Inc()
		in.log.Error("a run taken up again after a restart could not be opened; it fails", "run_id", v.RunID, "err", decryptErr)
		in.events.Run(v.RunID, tc, finished(eventv1.Outcome_OUTCOME_FAILED, "the gateway restarted in the middle of the run's intake and could not open its envelope again"))
		return nil
	}
	if decryptErr != nil {
		span.SetStatus(codes.Error, "decrypt")
		in.reject(payload, decryptErr)
		return nil
	}
	if announced >= 2 {
		// Admitted and announced by the earlier life, not yet stored: the
		// decision stands (the policy is not asked again); the run is queued.
		in.log.Info("run admitted before a restart taken up again; queued without announcing it twice", "run_id", v.RunID)
		span.SetAttributes(attribute.String("hangar.result", "admitted"))
		return in.admit(ctx, span, v.RunID, tc, spec, payload, start, &decided)
	}
	// The policy decides while "received" is journaled.
	secretsErr := checkSecretBytes(spec)
	type verdict struct {
		res *policyv1.EvaluateResponse
		err error
	}
	policy := make(chan verdict, 1)
	if secretsErr == nil {
		go func() {
			res, err := in.evaluate(ctx, v.RunID, spec)
			policy <- verdict{res, err}
		}()
	}
	if announced == 0 {
		in.events.Run(v.RunID, tc, &eventv1.Event{Kind: &eventv1.Event_Received{Received: &eventv1.RunReceived{}}})
	}
	if err := secretsErr; err != nil {
		in.results.WithLabelValues("failed").Inc()
		span.SetStatus(codes.Error, "secrets too large")
		in.log.Warn("run refused: secrets too large", "run_id", v.RunID, "err", err)
		in.events.Run(v.RunID, tc, finished(eventv1.Outcome_OUTCOME_FAILED, err.Error()))
		return nil
	}

	d := <-policy
	decision, err := d.res, d.err
	if err != nil && ctx.Err() != nil {
		// The gateway is stopping: the run stays undecided and its message
		// unacknowledged, so that it is taken up again after the restart.
		decided = false
		return fmt.Errorf("intake: run %s interrupted by shutdown: %w", v.RunID, ctx.Err())
	}
	if err != nil {
		in.results.WithLabelValues("failed").Inc()
		span.SetStatus(codes.Error, "policy")
		in.log.Error("policy decision failed; the run fails", "run_id", v.RunID, "err", err)
		in.events.Run(v.RunID, tc, finished(eventv1.Outcome_OUTCOME_FAILED, "policy evaluation failed: "+statusMessage(err)))
		return nil
	}
	if !decision.GetAllowed() {
		in.results.WithLabelValues("denied").Inc()
		span.SetAttributes(attribute.String("hangar.result", "denied"))
		in.log.Info("run denied by policy", "run_id", v.RunID, "messages", len(decision.GetDeny()))
		in.events.Run(v.RunID, tc, &eventv1.Event{Kind: &eventv1.Event_Denied{Denied: &eventv1.RunDenied{Messages: decision.GetDeny()}}})
		return nil
	}

	// Admitted first: the queue may assign the run (and emit "started") at once.
	in.results.WithLabelValues("admitted").Inc()
	span.SetAttributes(attribute.String("hangar.result", "admitted"))
	in.log.Info("run admitted", "run_id", v.RunID)
	in.events.Run(v.RunID, tc, &eventv1.Event{Kind: &eventv1.Event_Admitted{Admitted: &eventv1.RunAdmitted{}}})
	return in.admit(ctx, span, v.RunID, tc, spec, payload, start, &decided)
}

// admit hands an admitted run (announced) to the queue. If the gateway stops
// meanwhile, the run stays undecided (*decided = false) and its message
// unacknowledged: the next life takes it up again from what was announced.
func (in *Intake) admit(ctx context.Context, span trace.Span, runID string, tc map[string]string, spec *runv1.RunSpec, payload []byte, received time.Time, decided *bool) error {
	if err := in.queue.Admit(ctx, &Run{ID: runID, Spec: spec, TraceContext: tc, AdmittedAt: in.now(), Envelope: payload, ReceivedAt: received}); err != nil {
		if ctx.Err() != nil {
			*decided = false
			return fmt.Errorf("intake: run %s interrupted by shutdown: %w", runID, ctx.Err())
		}
		span.SetStatus(codes.Error, "queue")
		in.events.Run(runID, tc, finished(eventv1.Outcome_OUTCOME_FAILED, "could not queue the run: "+err.Error()))
	}
	return nil
}

// Oversize rejects an envelope too large to be held in memory, known only by
// its size and SHA-256 (the MQTT link read it through a digest): the event id
// is the one Rejected would give the payload.
func (in *Intake) Oversize(size int64, sum [32]byte) {
	reason := runenvelope.ReasonName(eventv1.RejectReason_REJECT_REASON_OVERSIZE)
	in.rejected.WithLabelValues(reason).Inc()
	detail := fmt.Sprintf("payload is %d bytes, limit is %d", size, in.opener.MaxSize)
	in.log.Warn("envelope rejected", "reason", reason, "detail", detail)
	in.events.RejectedDigest(sum, "", &eventv1.EnvelopeRejected{Reason: eventv1.RejectReason_REJECT_REASON_OVERSIZE, Message: detail})
}

func (in *Intake) reject(payload []byte, err error) {
	var rej *runenvelope.RejectError
	if !errors.As(err, &rej) {
		rej = &runenvelope.RejectError{Reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, Detail: err.Error()}
	}
	reason := runenvelope.ReasonName(rej.Reason)
	in.rejected.WithLabelValues(reason).Inc()
	// A run id is only reported once a valid signature vouches for it: anyone
	// able to publish could otherwise put words in another run's mouth.
	runID := ""
	if rej.SignatureValid {
		runID = rej.RunID
	}
	in.log.Warn("envelope rejected", "reason", reason, "run_id", runID, "detail", rej.Detail)
	in.events.Rejected(payload, runID, &eventv1.EnvelopeRejected{Reason: rej.Reason, Message: rej.Detail})
}

// evaluate asks the policy service, waiting for it to be reachable for up to the
// policy timeout.
func (in *Intake) evaluate(ctx context.Context, runID string, spec *runv1.RunSpec) (*policyv1.EvaluateResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, in.policyTimeout)
	defer cancel()
	return in.policy.Evaluate(ctx, PolicyInput(runID, in.opener.PoolID, spec, in.metadata), grpc.WaitForReady(true))
}

func finished(o eventv1.Outcome, reason string) *eventv1.Event {
	return &eventv1.Event{Kind: &eventv1.Event_Finished{Finished: &eventv1.RunFinished{Outcome: o, ExitCode: -1, Reason: reason}}}
}

func statusMessage(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}
