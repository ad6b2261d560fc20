package tracefile

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with what the code draws now")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func id(s string, n int) []byte {
	b, _ := hex.DecodeString(strings.Repeat(s, n))
	return b
}

// demoTrace is a run's trace across the four services and hangarctl.
func demoTrace() *collectortrace.ExportTraceServiceRequest {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	trace := id("ab", 16)
	span := func(sid, parent, name string, start, dur time.Duration) *tracepb.Span {
		s := &tracepb.Span{TraceId: trace, SpanId: id(sid, 8), Name: name, Kind: tracepb.Span_SPAN_KIND_INTERNAL,
			StartTimeUnixNano: uint64(t0.Add(start).UnixNano()), EndTimeUnixNano: uint64(t0.Add(start + dur).UnixNano())}
		if parent != "" {
			s.ParentSpanId = id(parent, 8)
		}
		return s
	}
	rs := func(service string, spans ...*tracepb.Span) *tracepb.ResourceSpans {
		return &tracepb.ResourceSpans{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}}}}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
		}
	}
	failed := span("07", "05", "executor.phase perform", 1500*time.Millisecond, 400*time.Millisecond)
	failed.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	return &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		rs("hangar-executor", span("05", "02", "executor.run", time.Second, time.Second), span("06", "05", "executor.phase init", time.Second, 500*time.Millisecond), failed),
		rs("hangarctl", span("01", "", "hangarctl.submit", 0, 5*time.Millisecond)),
		rs("hangar-gateway", span("02", "01", "gateway.intake", 10*time.Millisecond, 20*time.Millisecond), span("03", "02", "PolicyService/Evaluate", 12*time.Millisecond, 700*time.Microsecond)),
		rs("hangar-policy", span("04", "03", "policy.Evaluate", 12*time.Millisecond, 90*time.Microsecond)),
		rs("hangar-logship", span("08", "05", "logship.Ship", 1100*time.Millisecond, 900*time.Millisecond)),
	}}
}

func TestDraw(t *testing.T) {
	var b bytes.Buffer
	Draw(&b, strings.Repeat("ab", 16), Spans(demoTrace()), 20)
	golden(t, "waterfall", b.String())
	for _, svc := range []string{"hangar-gateway", "hangar-policy", "hangar-executor", "hangar-logship"} {
		if !strings.Contains(b.String(), "\n"+svc+" ") {
			t.Errorf("the waterfall does not name %s", svc)
		}
	}
}

func TestDrawNoSpans(t *testing.T) {
	var b bytes.Buffer
	Draw(&b, "00", nil, 20)
	if b.String() != "trace 00: no spans\n" {
		t.Errorf("got %q", b.String())
	}
}

func TestOTLPJSONRoundTrip(t *testing.T) {
	req := demoTrace()
	path := filepath.Join(t.TempDir(), "traces", "run-x.json")
	if err := Write(path, req); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// OTLP JSON: hex ids, enums as numbers, camelCase names.
	for _, want := range []string{`"traceId": "` + strings.Repeat("ab", 16) + `"`, `"spanId": "0505050505050505"`, `"kind": 1`, `"startTimeUnixNano": "`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("the file lacks %s:\n%s", want, raw)
		}
	}
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, req) {
		t.Errorf("read back a different request:\n%v\nwant\n%v", back, req)
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not JSON", "{", "not OTLP JSON"},
		{"base64 id", `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"q83vEjRWeJA="}]}]}]}`, "not hex"},
		{"wrong type", `{"resourceSpans":{}}`, "not OTLP JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Unmarshal([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Unmarshal(%s) = %v, want an error with %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	req := demoTrace()
	other := proto.Clone(req.ResourceSpans[1]).(*tracepb.ResourceSpans)
	other.ScopeSpans[0].Spans[0].TraceId = id("cd", 16)
	req.ResourceSpans = append(req.ResourceSpans, other)
	got := Spans(Filter(req, strings.Repeat("ab", 16)))
	if len(got) != 8 {
		t.Errorf("Filter kept %d spans, want the 8 of the trace", len(got))
	}
}
