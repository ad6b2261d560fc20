// Package tracefile keeps a run's trace as OTLP JSON (the OTLP/HTTP JSON
// encoding of an ExportTraceServiceRequest: protojson, with trace and span
// ids in hex and enums as numbers, as the OTLP specification asks) and draws
// it in a terminal as a waterfall: one line per span, in tree order, with its
// service, start and duration.
package tracefile

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// idFields are the JSON fields OTLP encodes as hex, where protojson uses base64.
var idFields = map[string]bool{"traceId": true, "spanId": true, "parentSpanId": true}

// Marshal encodes req as OTLP JSON.
func Marshal(req *collectortrace.ExportTraceServiceRequest) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseEnumNumbers: true}.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode trace: %w", err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("encode trace: %w", err)
	}
	if err := convertIDs(v, func(s string) (string, error) {
		raw, err := base64.StdEncoding.DecodeString(s)
		return hex.EncodeToString(raw), err
	}); err != nil {
		return nil, fmt.Errorf("encode trace: %w", err)
	}
	out, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode trace: %w", err)
	}
	return append(out, '\n'), nil
}

// Unmarshal decodes OTLP JSON.
func Unmarshal(b []byte) (*collectortrace.ExportTraceServiceRequest, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("not OTLP JSON: %w", err)
	}
	if err := convertIDs(v, func(s string) (string, error) {
		raw, err := hex.DecodeString(s)
		return base64.StdEncoding.EncodeToString(raw), err
	}); err != nil {
		return nil, fmt.Errorf("not OTLP JSON: an id is not hex: %w", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	req := &collectortrace.ExportTraceServiceRequest{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("not OTLP JSON: %w", err)
	}
	return req, nil
}

func convertIDs(v any, conv func(string) (string, error)) error {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && idFields[k] {
				c, err := conv(s)
				if err != nil {
					return fmt.Errorf("%s %q: %w", k, s, err)
				}
				x[k] = c
				continue
			}
			if err := convertIDs(val, conv); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := convertIDs(e, conv); err != nil {
				return err
			}
		}
	}
	return nil
}

// Path is where a run's trace is kept under a dev directory.
func Path(devDir, runID string) string {
	return filepath.Join(devDir, "traces", runID+".json")
}

// Write stores req as OTLP JSON at path.
func Write(path string, req *collectortrace.ExportTraceServiceRequest) error {
	b, err := Marshal(req)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// Read loads an OTLP JSON file.
func Read(path string) (*collectortrace.ExportTraceServiceRequest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	req, err := Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return req, nil
}

// Span is one span of a waterfall.
type Span struct {
	TraceID, ID, Parent string
	Service, Name       string
	Start, End          time.Time
	Error               bool
}

// Spans lists the spans of req.
func Spans(req *collectortrace.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out = append(out, Span{
					TraceID: hex.EncodeToString(s.GetTraceId()),
					ID:      hex.EncodeToString(s.GetSpanId()), Parent: hex.EncodeToString(s.GetParentSpanId()),
					Service: service, Name: s.GetName(),
					Start: time.Unix(0, int64(s.GetStartTimeUnixNano())), End: time.Unix(0, int64(s.GetEndTimeUnixNano())),
					Error: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
				})
			}
		}
	}
	return out
}

// Services lists the services of spans, sorted.
func Services(spans []Span) []string {
	set := map[string]bool{}
	for _, s := range spans {
		set[s.Service] = true
	}
	var out []string
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// ordered returns spans in tree order (each child after its parent, siblings
// by start) with their depth; spans whose parent is not in the set are roots.
func ordered(spans []Span) ([]Span, []int) {
	byID := map[string]bool{}
	for _, s := range spans {
		byID[s.ID] = true
	}
	children := map[string][]Span{}
	var roots []Span
	for _, s := range spans {
		if s.Parent != "" && byID[s.Parent] && s.Parent != s.ID {
			children[s.Parent] = append(children[s.Parent], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(l []Span) {
		sort.SliceStable(l, func(i, j int) bool {
			if !l[i].Start.Equal(l[j].Start) {
				return l[i].Start.Before(l[j].Start)
			}
			return l[i].Name < l[j].Name
		})
	}
	var out []Span
	var depth []int
	seen := map[string]bool{}
	var walk func(s Span, d int)
	walk = func(s Span, d int) {
		if seen[s.ID] {
			return
		}
		seen[s.ID] = true
		out, depth = append(out, s), append(depth, d)
		kids := children[s.ID]
		byStart(kids)
		for _, k := range kids {
			walk(k, d+1)
		}
	}
	byStart(roots)
	for _, r := range roots {
		walk(r, 0)
	}
	return out, depth
}

// Draw writes the waterfall of spans: a header line, then one line per span
// (service, span name indented by depth, start from the first span, duration
// and a bar of barWidth columns on the trace's time line).
func Draw(w io.Writer, traceID string, spans []Span, barWidth int) {
	if len(spans) == 0 {
		fmt.Fprintf(w, "trace %s: no spans\n", traceID)
		return
	}
	list, depth := ordered(spans)
	t0, t1 := list[0].Start, list[0].End
	for _, s := range list {
		if s.Start.Before(t0) {
			t0 = s.Start
		}
		if s.End.After(t1) {
			t1 = s.End
		}
	}
	total := t1.Sub(t0)
	svcW, nameW := len("SERVICE"), len("SPAN")
	for i, s := range list {
		svcW = max(svcW, len(s.Service))
		nameW = max(nameW, 2*depth[i]+len(s.Name))
	}
	nameW = min(nameW, 48)
	fmt.Fprintf(w, "trace %s: %d spans from %d services over %s\n", traceID, len(list), len(Services(list)), fmtDur(total))
	fmt.Fprintf(w, "%-*s  %-*s  %9s  %9s\n", svcW, "SERVICE", nameW, "SPAN", "START", "DURATION")
	for i, s := range list {
		name := strings.Repeat("  ", depth[i]) + s.Name
		if len(name) > nameW {
			name = name[:nameW-1] + "…"
		}
		line := fmt.Sprintf("%-*s  %-*s  %9s  %9s  %s", svcW, s.Service, nameW, name,
			"+"+fmtDur(s.Start.Sub(t0)), fmtDur(s.End.Sub(s.Start)), bar(s.Start.Sub(t0), s.End.Sub(s.Start), total, barWidth))
		if s.Error {
			line += " error"
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

func bar(start, dur, total time.Duration, width int) string {
	if width <= 0 || total <= 0 {
		return ""
	}
	from := int(int64(width) * int64(start) / int64(total))
	n := int(int64(width) * int64(dur) / int64(total))
	from = min(max(from, 0), width-1)
	n = min(max(n, 1), width-from)
	return strings.Repeat(" ", from) + strings.Repeat("█", n)
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// Filter keeps the resource spans of req whose spans belong to traceID.
func Filter(req *collectortrace.ExportTraceServiceRequest, traceID string) *collectortrace.ExportTraceServiceRequest {
	out := &collectortrace.ExportTraceServiceRequest{}
	for _, rs := range req.GetResourceSpans() {
		nrs := &tracepb.ResourceSpans{Resource: rs.GetResource(), SchemaUrl: rs.GetSchemaUrl()}
		for _, ss := range rs.GetScopeSpans() {
			nss := &tracepb.ScopeSpans{Scope: ss.GetScope(), SchemaUrl: ss.GetSchemaUrl()}
			for _, s := range ss.GetSpans() {
				if hex.EncodeToString(s.GetTraceId()) == traceID {
					nss.Spans = append(nss.Spans, s)
				}
			}
			if len(nss.Spans) > 0 {
				nrs.ScopeSpans = append(nrs.ScopeSpans, nss)
			}
		}
		if len(nrs.ScopeSpans) > 0 {
			out.ResourceSpans = append(out.ResourceSpans, nrs)
		}
	}
	return out
}
