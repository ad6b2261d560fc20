package policyserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"github.com/hangar-dev/hangar/services/policy/internal/engine"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const policy = `package hangar.initialization

deny contains "stack is frozen" if "frozen" in input.stack.labels

deny contains sprintf("image %s is not allowed", [input.runner_image]) if {
	not startswith(input.runner_image, "registry.internal/")
}

# Two rules that conflict when the run is of type CONFLICT.
tier := "a" if input.run.type == "CONFLICT"
tier := "b" if input.run.type == "CONFLICT"
deny contains "never" if tier == "c"
`

type fixture struct {
	client policyv1.PolicyServiceClient
	reg    *prometheus.Registry
	spans  *tracetest.SpanRecorder
}

// start serves a Server over a real loopback socket with a plain grpc.Server.
func start(t *testing.T, eval Evaluator) fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	policyv1.RegisterPolicyServiceServer(srv, New(eval, metrics, tp.Tracer("test"), log))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return fixture{client: policyv1.NewPolicyServiceClient(conn), reg: reg, spans: spans}
}

func TestEvaluate(t *testing.T) {
	eng, err := engine.Compile(context.Background(), "policy.rego", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	f := start(t, eng)

	tests := []struct {
		name     string
		req      *policyv1.EvaluateRequest
		want     *policyv1.EvaluateResponse
		code     codes.Code
		errText  string
		result   string
		recorded bool // whether the evaluation time is observed
	}{
		{
			name:     "allowed",
			req:      &policyv1.EvaluateRequest{Run: &policyv1.RunInput{Id: "r1"}, RunnerImage: "registry.internal/runner"},
			want:     &policyv1.EvaluateResponse{Allowed: true},
			result:   ResultAllowed,
			recorded: true,
		},
		{
			name: "denied with sorted messages",
			req: &policyv1.EvaluateRequest{
				Run:         &policyv1.RunInput{Id: "r2"},
				Stack:       &policyv1.StackInput{Labels: []string{"frozen"}},
				RunnerImage: "docker.io/x",
			},
			want:     &policyv1.EvaluateResponse{Deny: []string{"image docker.io/x is not allowed", "stack is frozen"}},
			result:   ResultDenied,
			recorded: true,
		},
		{
			name:    "missing run id",
			req:     &policyv1.EvaluateRequest{RunnerImage: "registry.internal/runner"},
			code:    codes.InvalidArgument,
			errText: "run.id is required",
			result:  ResultError,
		},
		{
			name:     "evaluation error",
			req:      &policyv1.EvaluateRequest{Run: &policyv1.RunInput{Id: "r3", Type: "CONFLICT"}, RunnerImage: "registry.internal/runner"},
			code:     codes.Internal,
			errText:  "eval_conflict_error",
			result:   ResultError,
			recorded: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.spans.Reset()
			before := counterValue(t, f.reg, tt.result)
			beforeCount := histogramCount(t, f.reg)

			resp, err := f.client.Evaluate(context.Background(), tt.req)
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
			if err != nil && !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q does not contain %q", err, tt.errText)
			}
			if tt.want != nil && (resp.GetAllowed() != tt.want.Allowed || !slices.Equal(resp.GetDeny(), tt.want.Deny)) {
				t.Errorf("response = %v, want %v", resp, tt.want)
			}

			if got := counterValue(t, f.reg, tt.result) - before; got != 1 {
				t.Errorf("hangar_policy_decisions_total{result=%q} grew by %v", tt.result, got)
			}
			wantObs := uint64(0)
			if tt.recorded {
				wantObs = 1
			}
			if got := histogramCount(t, f.reg) - beforeCount; got != wantObs {
				t.Errorf("hangar_policy_decision_seconds observed %d times, want %d", got, wantObs)
			}

			ended := f.spans.Ended()
			if len(ended) != 1 {
				t.Fatalf("%d spans ended, want 1", len(ended))
			}
			attrs := map[string]string{}
			for _, kv := range ended[0].Attributes() {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			if attrs[AttrRunID] != tt.req.GetRun().GetId() || attrs[AttrResult] != tt.result {
				t.Errorf("span attributes = %v", attrs)
			}
		})
	}
}

func TestNoPolicyAllowsEverything(t *testing.T) {
	f := start(t, engine.AllowAll())
	resp, err := f.client.Evaluate(context.Background(), &policyv1.EvaluateRequest{Run: &policyv1.RunInput{Id: "r1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetAllowed() || len(resp.GetDeny()) != 0 {
		t.Errorf("response = %v", resp)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	// Every result is exported from the start, at zero.
	for _, r := range []string{ResultAllowed, ResultDenied, ResultError} {
		if got := counterValue(t, reg, r); got != 0 {
			t.Errorf("%s = %v", r, got)
		}
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice succeeded")
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "hangar_policy_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no hangar_policy_decisions_total{result=%q}", result)
	return 0
}

func histogramCount(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "hangar_policy_decision_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no hangar_policy_decision_seconds")
	return 0
}
