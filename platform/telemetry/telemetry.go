// Package telemetry sets up tracing (OpenTelemetry, exported over OTLP/gRPC)
// and the Prometheus registry of a Hangar service, and carries W3C trace
// context across hops that are not gRPC, such as MQTT payloads.
//
// Nothing here touches process-wide state: Setup returns a Telemetry that
// callers pass to whatever needs a tracer provider or propagator (the serve
// and dial packages, the MQTT client), and NewRegistry returns a fresh
// registry rather than using Prometheus's default one.
package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/credentials"
)

// Config says where and how a service exports its traces.
type Config struct {
	// ServiceName becomes the service.name resource attribute. Required.
	ServiceName string
	// OTLPEndpoint is the host:port of an OTLP/gRPC collector. Empty turns
	// tracing off: spans are not recorded, but trace context still passes
	// through the service.
	OTLPEndpoint string
	// Insecure exports in plaintext. Otherwise the exporter uses TLS, with
	// TLS when set and the system roots when nil.
	Insecure bool
	TLS      *tls.Config
	// SampleRatio is the fraction of new traces (those without a sampled
	// parent) to record, in (0, 1]. Zero means 1. Children follow their
	// parent's decision.
	SampleRatio float64
	// BatchTimeout is the longest a finished span waits before export.
	// Zero means 5s; end-to-end tests set it lower.
	BatchTimeout time.Duration
}

// Environment variables read by ConfigFromEnv.
const (
	EnvOTLPEndpoint = "HANGAR_OTLP_ENDPOINT"
	EnvOTLPInsecure = "HANGAR_OTLP_INSECURE"
	EnvSampleRatio  = "HANGAR_TRACE_SAMPLE_RATIO"
	EnvBatchTimeout = "HANGAR_OTLP_BATCH_TIMEOUT"
)

// ConfigFromEnv reads the tracing configuration every Hangar service shares:
// HANGAR_OTLP_ENDPOINT (host:port, empty = off), HANGAR_OTLP_INSECURE
// (default false), HANGAR_TRACE_SAMPLE_RATIO (default 1) and
// HANGAR_OTLP_BATCH_TIMEOUT (default 5s). Errors accumulate in r.
func ConfigFromEnv(r *envconfig.Reader, serviceName string) Config {
	return Config{
		ServiceName:  serviceName,
		OTLPEndpoint: r.Addr(EnvOTLPEndpoint, ""),
		Insecure:     r.Bool(EnvOTLPInsecure, false),
		SampleRatio:  r.Float(EnvSampleRatio, 1, 1e-6, 1),
		BatchTimeout: r.Duration(EnvBatchTimeout, 5*time.Second),
	}
}

// Telemetry holds a service's tracer provider and propagator.
type Telemetry struct {
	provider   trace.TracerProvider
	sdk        *sdktrace.TracerProvider // nil when tracing is off
	propagator propagation.TextMapPropagator
}

// Setup builds the tracer provider described by cfg. The exporter connects
// lazily, so Setup does not fail when the collector is down; spans are then
// dropped after the exporter's retries. Call Shutdown to flush.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("telemetry setup: service name is required")
	}
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	if ratio < 0 || ratio > 1 {
		return nil, fmt.Errorf("telemetry setup: sample ratio %v not in (0, 1]", cfg.SampleRatio)
	}
	t := &Telemetry{propagator: NewPropagator()}
	if cfg.OTLPEndpoint == "" {
		t.provider = noop.NewTracerProvider()
		return t, nil
	}

	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
	switch {
	case cfg.Insecure:
		opts = append(opts, otlptracegrpc.WithInsecure())
	case cfg.TLS != nil:
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(cfg.TLS)))
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry setup: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry setup: resource: %w", err)
	}
	var batch []sdktrace.BatchSpanProcessorOption
	if cfg.BatchTimeout > 0 {
		batch = append(batch, sdktrace.WithBatchTimeout(cfg.BatchTimeout))
	}
	t.sdk = sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithBatcher(exp, batch...),
	)
	t.provider = t.sdk
	return t, nil
}

// NewPropagator returns the W3C propagator Hangar uses everywhere: trace
// context and baggage.
func NewPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Every method of Telemetry works on a nil *Telemetry, which behaves as
// tracing turned off.

// TracerProvider returns the provider to hand to instrumentation.
func (t *Telemetry) TracerProvider() trace.TracerProvider {
	if t == nil {
		return noop.NewTracerProvider()
	}
	return t.provider
}

// Propagator returns the W3C trace context and baggage propagator.
func (t *Telemetry) Propagator() propagation.TextMapPropagator {
	if t == nil {
		return NewPropagator()
	}
	return t.propagator
}

// Tracer returns a named tracer of the provider.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.TracerProvider().Tracer(name) }

// Enabled reports whether spans are exported.
func (t *Telemetry) Enabled() bool { return t != nil && t.sdk != nil }

// ForceFlush exports every finished span now.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if err := t.sdk.ForceFlush(ctx); err != nil {
		return fmt.Errorf("telemetry flush: %w", err)
	}
	return nil
}

// Shutdown flushes pending spans and stops the exporter. Spans started
// afterwards are dropped.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry shutdown: %w", err)
	}
	return nil
}

// Carrier keys written by Inject for the W3C propagator.
const (
	KeyTraceparent = "traceparent"
	KeyTracestate  = "tracestate"
	KeyBaggage     = "baggage"
)

// Inject returns the trace context of ctx as a map ("traceparent",
// "tracestate", "baggage"), to carry inside a message payload. It returns
// an empty map when ctx holds no span. A nil p means NewPropagator().
func Inject(ctx context.Context, p propagation.TextMapPropagator) map[string]string {
	if p == nil {
		p = NewPropagator()
	}
	c := propagation.MapCarrier{}
	p.Inject(ctx, c)
	return c
}

// Extract returns ctx with the remote trace context found in carrier (as
// written by Inject), to parent the spans that handle the message. A nil or
// malformed carrier leaves ctx as it is. A nil p means NewPropagator().
func Extract(ctx context.Context, p propagation.TextMapPropagator, carrier map[string]string) context.Context {
	if p == nil {
		p = NewPropagator()
	}
	if carrier == nil {
		return ctx
	}
	return p.Extract(ctx, propagation.MapCarrier(carrier))
}
