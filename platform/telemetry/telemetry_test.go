package telemetry_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/telemetry/otlprecv"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

func startReceiver(t *testing.T) *otlprecv.Receiver {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rcv, err := otlprecv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.Close)
	return rcv
}

func setup(t *testing.T, cfg telemetry.Config) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel
}

// TestTraceCrossesServices exports spans from two services to a real OTLP
// receiver, the second parented through Inject/Extract as an MQTT payload
// would carry it.
func TestTraceCrossesServices(t *testing.T) {
	rcv := startReceiver(t)
	cfg := func(name string) telemetry.Config {
		return telemetry.Config{ServiceName: name, OTLPEndpoint: rcv.Addr(), Insecure: true, BatchTimeout: 50 * time.Millisecond}
	}
	gw := setup(t, cfg("gateway"))
	ex := setup(t, cfg("executor"))
	if !gw.Enabled() {
		t.Fatal("Enabled = false with an endpoint")
	}

	ctx, root := gw.Tracer("test").Start(context.Background(), "receive run")
	carrier := telemetry.Inject(ctx, gw.Propagator())
	root.End()
	if !strings.HasPrefix(carrier[telemetry.KeyTraceparent], "00-"+root.SpanContext().TraceID().String()) {
		t.Fatalf("carrier = %v, want traceparent of %s", carrier, root.SpanContext().TraceID())
	}

	remote := telemetry.Extract(context.Background(), ex.Propagator(), carrier)
	if got := trace.SpanContextFromContext(remote); got.TraceID() != root.SpanContext().TraceID() || !got.IsRemote() {
		t.Fatalf("extracted span context %v, want remote in trace %s", got, root.SpanContext().TraceID())
	}
	_, child := ex.Tracer("test").Start(remote, "execute run")
	child.End()

	traceID := root.SpanContext().TraceID().String()
	spans, err := rcv.WaitFor(func(s []otlprecv.RecordedSpan) bool {
		return len(otlprecv.ByTrace(s, traceID)) == 2
	}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := otlprecv.ByTrace(spans, traceID)
	if svcs := otlprecv.Services(got); !slices.Equal(svcs, []string{"executor", "gateway"}) {
		t.Errorf("services = %v", svcs)
	}
	byName := map[string]otlprecv.RecordedSpan{}
	for _, s := range got {
		byName[s.Name] = s
	}
	r, c := byName["receive run"], byName["execute run"]
	if r.Service != "gateway" || r.ParentSpanID != "" || r.SpanID != root.SpanContext().SpanID().String() {
		t.Errorf("root span = %+v", r)
	}
	if c.Service != "executor" || c.ParentSpanID != r.SpanID || c.Kind != "INTERNAL" {
		t.Errorf("child span = %+v, want parent %s", c, r.SpanID)
	}
}

func TestShutdownFlushes(t *testing.T) {
	rcv := startReceiver(t)
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{
		ServiceName: "policy", OTLPEndpoint: rcv.Addr(), Insecure: true, BatchTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("test").Start(context.Background(), "evaluate")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// No waiting: Shutdown returns only after the export.
	if spans := rcv.Spans(); len(spans) != 1 || spans[0].Service != "policy" || spans[0].Name != "evaluate" {
		t.Errorf("spans after Shutdown = %+v", spans)
	}
}

func TestParentBasedSampling(t *testing.T) {
	rcv := startReceiver(t)
	tel := setup(t, telemetry.Config{
		ServiceName: "gateway", OTLPEndpoint: rcv.Addr(), Insecure: true, SampleRatio: 1e-9,
	})
	_, root := tel.Tracer("test").Start(context.Background(), "new root")
	if root.SpanContext().IsSampled() {
		t.Error("root span sampled at ratio 1e-9")
	}
	root.End()

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := telemetry.Extract(context.Background(), nil, map[string]string{telemetry.KeyTraceparent: tp})
	_, child := tel.Tracer("test").Start(ctx, "child of sampled parent")
	if !child.SpanContext().IsSampled() {
		t.Error("child of a sampled remote parent not sampled")
	}
	child.End()
}

// TestTracingOff checks that without an endpoint no span is recorded, yet
// trace context still passes through.
func TestTracingOff(t *testing.T) {
	tel := setup(t, telemetry.Config{ServiceName: "logship"})
	if tel.Enabled() {
		t.Error("Enabled = true without an endpoint")
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := telemetry.Extract(context.Background(), tel.Propagator(), map[string]string{telemetry.KeyTraceparent: tp})
	ctx, span := tel.Tracer("test").Start(ctx, "ship")
	defer span.End()
	if span.IsRecording() {
		t.Error("span recording with tracing off")
	}
	if got := telemetry.Inject(ctx, tel.Propagator())[telemetry.KeyTraceparent]; got != tp {
		t.Errorf("traceparent = %q, want %q passed through", got, tp)
	}
	if err := tel.ForceFlush(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestInjectExtract(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	member, err := baggage.NewMember("pool", "p-1")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		carrier   map[string]string
		wantTrace string
		wantState string
	}{
		{"nil carrier", nil, "", ""},
		{"empty carrier", map[string]string{}, "", ""},
		{"malformed", map[string]string{telemetry.KeyTraceparent: "00-zz-yy-01"}, "", ""},
		{"traceparent", map[string]string{telemetry.KeyTraceparent: tp}, "4bf92f3577b34da6a3ce929d0e0e4736", ""},
		{"with tracestate", map[string]string{telemetry.KeyTraceparent: tp, telemetry.KeyTracestate: "hangar=1"},
			"4bf92f3577b34da6a3ce929d0e0e4736", "hangar=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := telemetry.Extract(baggage.ContextWithBaggage(context.Background(), bag), nil, tt.carrier)
			sc := trace.SpanContextFromContext(ctx)
			if tt.wantTrace == "" {
				if sc.IsValid() {
					t.Fatalf("span context %v, want none", sc)
				}
				if out := telemetry.Inject(ctx, nil); out[telemetry.KeyTraceparent] != "" {
					t.Errorf("Inject = %v, want no traceparent", out)
				}
				return
			}
			if sc.TraceID().String() != tt.wantTrace {
				t.Errorf("trace id = %s, want %s", sc.TraceID(), tt.wantTrace)
			}
			out := telemetry.Inject(ctx, telemetry.NewPropagator())
			if out[telemetry.KeyTraceparent] != tp || out[telemetry.KeyTracestate] != tt.wantState {
				t.Errorf("round trip = %v", out)
			}
			if out[telemetry.KeyBaggage] != "pool=p-1" {
				t.Errorf("baggage = %q", out[telemetry.KeyBaggage])
			}
		})
	}
}

func TestSetupErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  telemetry.Config
		want string
	}{
		{"no service name", telemetry.Config{}, "service name is required"},
		{"negative ratio", telemetry.Config{ServiceName: "x", SampleRatio: -0.5}, "sample ratio -0.5"},
		{"ratio above one", telemetry.Config{ServiceName: "x", SampleRatio: 2}, "sample ratio 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tel, err := telemetry.Setup(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Setup = %v, %v; want error containing %q", tel, err, tt.want)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    telemetry.Config
		wantErr string
	}{
		{"defaults", nil, telemetry.Config{ServiceName: "gateway", SampleRatio: 1, BatchTimeout: 5 * time.Second}, ""},
		{"all set", map[string]string{
			"HANGAR_OTLP_ENDPOINT": "otel:4317", "HANGAR_OTLP_INSECURE": "true",
			"HANGAR_TRACE_SAMPLE_RATIO": "0.1", "HANGAR_OTLP_BATCH_TIMEOUT": "200ms",
		}, telemetry.Config{ServiceName: "gateway", OTLPEndpoint: "otel:4317", Insecure: true, SampleRatio: 0.1, BatchTimeout: 200 * time.Millisecond}, ""},
		{"bad ratio", map[string]string{"HANGAR_TRACE_SAMPLE_RATIO": "0"},
			telemetry.Config{ServiceName: "gateway", SampleRatio: 1, BatchTimeout: 5 * time.Second},
			"HANGAR_TRACE_SAMPLE_RATIO: 0 out of range [1e-06, 1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := envconfig.FromMap(tt.env)
			got := telemetry.ConfigFromEnv(r, "gateway")
			if got != tt.want {
				t.Errorf("ConfigFromEnv = %+v, want %+v", got, tt.want)
			}
			err := r.Err()
			if (err == nil) != (tt.wantErr == "") || (err != nil && err.Error() != tt.wantErr) {
				t.Errorf("Err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewRegistry(t *testing.T) {
	a, b := telemetry.NewRegistry("gateway"), telemetry.NewRegistry("policy")
	if a == b {
		t.Fatal("NewRegistry returned the same registry twice")
	}
	families, err := a.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{"go_goroutines", "process_open_fds", "hangar_service_info"} {
		if !names[want] {
			t.Errorf("registry lacks %s", want)
		}
	}
	for _, f := range families {
		if f.GetName() != "hangar_service_info" {
			continue
		}
		for _, lp := range f.GetMetric()[0].GetLabel() {
			if lp.GetName() == "service" && lp.GetValue() != "gateway" {
				t.Errorf("service label = %q", lp.GetValue())
			}
		}
	}
}

func TestNilTelemetry(t *testing.T) {
	var tel *telemetry.Telemetry
	if tel.Enabled() {
		t.Error("nil Telemetry enabled")
	}
	_, span := tel.Tracer("test").Start(context.Background(), "x")
	span.End()
	if span.IsRecording() {
		t.Error("nil Telemetry records spans")
	}
	if tel.Propagator() == nil || tel.TracerProvider() == nil {
		t.Error("nil Telemetry returns nil provider or propagator")
	}
	if err := tel.ForceFlush(context.Background()); err != nil {
		t.Error(err)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}
