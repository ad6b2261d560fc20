package otlprecv_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/telemetry/otlprecv"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func request(service string, spans ...*tracepb.Span) *collectortrace.ExportTraceServiceRequest {
	return &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", service)}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}
}

func TestReceiver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcv, err := otlprecv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	conn, err := grpc.NewClient(rcv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := collectortrace.NewTraceServiceClient(conn)

	trace1 := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	root := &tracepb.Span{
		TraceId: trace1, SpanId: []byte{1, 1, 1, 1, 1, 1, 1, 1}, Name: "publish run",
		Kind:       tracepb.Span_SPAN_KIND_PRODUCER,
		Attributes: []*commonpb.KeyValue{str("hangar.run_id", "r-1")},
		Status:     &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR},
	}
	child := &tracepb.Span{
		TraceId: trace1, SpanId: []byte{2, 2, 2, 2, 2, 2, 2, 2}, ParentSpanId: root.SpanId, Name: "receive run",
		Kind: tracepb.Span_SPAN_KIND_CONSUMER,
	}
	other := &tracepb.Span{TraceId: make([]byte, 16), SpanId: []byte{3, 3, 3, 3, 3, 3, 3, 3}, Name: "unrelated"}

	// A waiter started before the spans arrive is woken by them.
	type waited struct {
		spans []otlprecv.RecordedSpan
		err   error
	}
	got := make(chan waited, 1)
	go func() {
		s, err := rcv.WaitFor(func(s []otlprecv.RecordedSpan) bool { return len(s) == 3 }, 5*time.Second)
		got <- waited{s, err}
	}()
	for _, req := range []*collectortrace.ExportTraceServiceRequest{
		request("hangarctl", root), request("gateway", child, other),
	} {
		if _, err := client.Export(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	w := <-got
	if w.err != nil {
		t.Fatal(w.err)
	}

	const traceHex = "0102030405060708090a0b0c0d0e0f10"
	tr := otlprecv.ByTrace(w.spans, traceHex)
	if len(tr) != 2 {
		t.Fatalf("ByTrace = %+v", tr)
	}
	want := otlprecv.RecordedSpan{
		TraceID: traceHex, SpanID: "0101010101010101", Name: "publish run", Service: "hangarctl",
		Kind: "PRODUCER", StatusCode: "ERROR", Attributes: map[string]string{"hangar.run_id": "r-1"},
	}
	r := tr[0]
	r.Start, r.End = time.Time{}, time.Time{}
	if r.TraceID != want.TraceID || r.SpanID != want.SpanID || r.ParentSpanID != "" || r.Name != want.Name ||
		r.Service != want.Service || r.Kind != want.Kind || r.StatusCode != want.StatusCode ||
		r.Attributes["hangar.run_id"] != "r-1" {
		t.Errorf("root = %+v, want %+v", r, want)
	}
	if c := tr[1]; c.ParentSpanID != "0101010101010101" || c.Service != "gateway" || c.Kind != "CONSUMER" || c.StatusCode != "UNSET" {
		t.Errorf("child = %+v", c)
	}
	if s := otlprecv.Services(w.spans); !slices.Equal(s, []string{"gateway", "hangarctl"}) {
		t.Errorf("Services = %v", s)
	}

	// A condition never met times out with a summary of what arrived.
	_, err = rcv.WaitFor(func(s []otlprecv.RecordedSpan) bool { return len(s) > 3 }, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "3 spans received") || !strings.Contains(err.Error(), "gateway/receive run") {
		t.Errorf("WaitFor timeout error = %v", err)
	}

	rcv.Reset()
	if s := rcv.Spans(); len(s) != 0 {
		t.Errorf("Spans after Reset = %d", len(s))
	}

	// Close ends a pending wait at once.
	go func() {
		time.Sleep(50 * time.Millisecond)
		rcv.Close()
	}()
	start := time.Now()
	if _, err := rcv.WaitFor(func([]otlprecv.RecordedSpan) bool { return false }, 10*time.Second); err == nil ||
		!strings.Contains(err.Error(), "closed") || time.Since(start) > 5*time.Second {
		t.Errorf("WaitFor after Close = %v after %v", err, time.Since(start))
	}
	rcv.Close() // twice is fine
}
