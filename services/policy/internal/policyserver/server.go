// Package policyserver implements the hangar.policy.v1.PolicyService gRPC API
// over the engine: it validates requests, records metrics and spans, logs
// decisions, and maps the engine's errors to gRPC status codes.
package policyserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"github.com/hangar-dev/hangar/services/policy/internal/engine"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Results, as recorded in the result label of hangar_policy_decisions_total
// and the hangar.policy.result span attribute.
const (
	ResultAllowed = "allowed"
	ResultDenied  = "denied"
	ResultError   = "error"
)

// Span attribute keys. Only identifiers and outcomes are recorded: never
// environment values, commit messages or deny messages.
const (
	AttrRunID     = "hangar.run.id"
	AttrResult    = "hangar.policy.result"
	AttrDenyCount = "hangar.policy.deny_count"
)

// Evaluator is the part of the engine the server uses.
type Evaluator interface {
	Evaluate(ctx context.Context, input map[string]any) (engine.Decision, error)
}

// Metrics are the service's Prometheus metrics.
type Metrics struct {
	decisionSeconds prometheus.Histogram
	decisions       *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hangar_policy_decision_seconds",
			Help: "Time to evaluate the run-initialization policy for one request.",
			// Prepared queries take tens of microseconds; a slow policy or a
			// loaded host reaches milliseconds.
			Buckets: []float64{
				.00001, .000025, .00005,
				.0001, .00025, .0005,
				.001, .0025, .005,
				.01, .025, .05, .1,
			},
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hangar_policy_decisions_total",
			Help: "Evaluate calls by result: allowed, denied, or error (no decision was made).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.decisionSeconds, m.decisions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register policy metrics: %w", err)
		}
	}
	for _, r := range []string{ResultAllowed, ResultDenied, ResultError} {
		m.decisions.WithLabelValues(r)
	}
	return m, nil
}

// Server implements policyv1.PolicyServiceServer. It is safe for concurrent use.
type Server struct {
	policyv1.UnimplementedPolicyServiceServer

	eval    Evaluator
	metrics *Metrics
	tracer  trace.Tracer
	log     *slog.Logger
}

// New returns a Server evaluating requests with eval.
func New(eval Evaluator, metrics *Metrics, tracer trace.Tracer, log *slog.Logger) *Server {
	return &Server{eval: eval, metrics: metrics, tracer: tracer, log: log}
}

// Evaluate implements policyv1.PolicyServiceServer.
func (s *Server) Evaluate(ctx context.Context, req *policyv1.EvaluateRequest) (*policyv1.EvaluateResponse, error) {
	runID := req.GetRun().GetId()
	ctx, span := s.tracer.Start(ctx, "policy.Evaluate",
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String(AttrRunID, runID)))
	defer span.End()

	if runID == "" {
		s.metrics.decisions.WithLabelValues(ResultError).Inc()
		span.SetAttributes(attribute.String(AttrResult, ResultError))
		span.SetStatus(otelcodes.Error, "missing run id")
		return nil, status.Error(codes.InvalidArgument, "evaluate: run.id is required")
	}

	start := time.Now()
	dec, err := s.eval.Evaluate(ctx, engine.NewInput(req))
	s.metrics.decisionSeconds.Observe(time.Since(start).Seconds())

	if err != nil {
		s.metrics.decisions.WithLabelValues(ResultError).Inc()
		span.SetAttributes(attribute.String(AttrResult, ResultError))
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, "policy evaluation failed")
		s.log.ErrorContext(ctx, "policy evaluation failed: no decision", "run_id", runID, "error", err)
		return nil, statusFor(ctx, err)
	}

	result := ResultAllowed
	if !dec.Allowed {
		result = ResultDenied
	}
	s.metrics.decisions.WithLabelValues(result).Inc()
	span.SetAttributes(attribute.String(AttrResult, result), attribute.Int(AttrDenyCount, len(dec.Deny)))
	if dec.Allowed {
		s.log.DebugContext(ctx, "run allowed", "run_id", runID)
	} else {
		s.log.InfoContext(ctx, "run denied", "run_id", runID, "deny", dec.Deny)
	}
	return &policyv1.EvaluateResponse{Allowed: dec.Allowed, Deny: dec.Deny}, nil
}

// statusFor maps an evaluation error to a gRPC status. Cancellation and
// deadlines keep their own codes; everything else means the policy could not
// decide, which is INTERNAL.
func statusFor(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return status.Error(codes.Canceled, "evaluate: "+err.Error())
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "evaluate: "+err.Error())
	default:
		return status.Error(codes.Internal, "evaluate: "+err.Error())
	}
}
