// Package otlprecv is an in-process OTLP trace receiver for tests: a real
// gRPC server on loopback speaking the OpenTelemetry collector's trace
// protocol, which records every span it is sent.
//
// Point a service's OTLP endpoint at Addr (insecure), run the scenario, then
// assert on Spans or wait with WaitFor, for example that one trace id
// crosses every service:
//
//	rcv, err := otlprecv.Start(ctx)
//	...
//	spans, err := rcv.WaitFor(func(s []otlprecv.RecordedSpan) bool {
//		return len(otlprecv.Services(otlprecv.ByTrace(s, traceID))) == 4
//	}, 10*time.Second)
//
// It does not import "testing", so end-to-end harnesses can use it too.
package otlprecv

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// RecordedSpan is one span as received. Ids are lower-case hex;
// ParentSpanID is empty for a root span.
type RecordedSpan struct {
	TraceID      string
	SpanID       string
	ParentSpanID string
	Name         string
	// Service is the resource's service.name.
	Service string
	// Kind is the OTLP kind without its prefix: "SERVER", "CLIENT",
	// "INTERNAL", "PRODUCER", "CONSUMER" or "UNSPECIFIED".
	Kind string
	// StatusCode is "UNSET", "OK" or "ERROR".
	StatusCode string
	// Attributes holds the span's attributes, each value formatted as text.
	Attributes map[string]string
	Start, End time.Time
}

// Receiver records the spans exported to it. Its methods are safe for
// concurrent use.
type Receiver struct {
	collectortrace.UnimplementedTraceServiceServer

	srv  *grpc.Server
	ln   net.Listener
	done chan struct{}
	stop sync.Once

	mu       sync.Mutex
	spans    []RecordedSpan
	requests []*collectortrace.ExportTraceServiceRequest
	changed  chan struct{} // closed and replaced whenever spans grow
}

// Start listens on 127.0.0.1 on a free port and serves until ctx is done or
// Close is called.
func Start(ctx context.Context) (*Receiver, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("otlprecv: listen: %w", err)
	}
	r := &Receiver{
		srv:     grpc.NewServer(),
		ln:      ln,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	collectortrace.RegisterTraceServiceServer(r.srv, r)
	go func() {
		// Serve returns when the server stops; there is no one to tell
		// about an earlier failure but WaitFor's timeout.
		_ = r.srv.Serve(ln)
	}()
	go func() {
		select {
		case <-ctx.Done():
			r.Close()
		case <-r.done:
		}
	}()
	return r, nil
}

// Addr returns the receiver's host:port, for an OTLP/gRPC endpoint.
func (r *Receiver) Addr() string { return r.ln.Addr().String() }

// Close stops the server. It is safe to call more than once.
func (r *Receiver) Close() {
	r.stop.Do(func() {
		close(r.done)
		r.srv.Stop()
	})
}

// Request returns every span received so far as one export request (the
// resource spans of each request received, in order): what an OTLP tool loads.
func (r *Receiver) Request() *collectortrace.ExportTraceServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &collectortrace.ExportTraceServiceRequest{}
	for _, req := range r.requests {
		out.ResourceSpans = append(out.ResourceSpans, req.GetResourceSpans()...)
	}
	return out
}

// Export implements the OTLP TraceService.
func (r *Receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	var got []RecordedSpan
	for _, rs := range req.GetResourceSpans() {
		service := attrString(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, record(service, s))
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.requests = append(r.requests, proto.Clone(req).(*collectortrace.ExportTraceServiceRequest))
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func record(service string, s *tracepb.Span) RecordedSpan {
	attrs := make(map[string]string, len(s.GetAttributes()))
	for _, kv := range s.GetAttributes() {
		attrs[kv.GetKey()] = formatValue(kv.GetValue())
	}
	kind := s.GetKind().String()
	kind = kind[len("SPAN_KIND_"):]
	code := s.GetStatus().GetCode().String()
	code = code[len("STATUS_CODE_"):]
	return RecordedSpan{
		TraceID:      hex.EncodeToString(s.GetTraceId()),
		SpanID:       hex.EncodeToString(s.GetSpanId()),
		ParentSpanID: hex.EncodeToString(s.GetParentSpanId()),
		Name:         s.GetName(),
		Service:      service,
		Kind:         kind,
		StatusCode:   code,
		Attributes:   attrs,
		Start:        time.Unix(0, int64(s.GetStartTimeUnixNano())),
		End:          time.Unix(0, int64(s.GetEndTimeUnixNano())),
	}
}

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return formatValue(kv.GetValue())
		}
	}
	return ""
}

func formatValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// Spans returns a copy of every span received so far, in arrival order.
func (r *Receiver) Spans() []RecordedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// Reset forgets every span received so far.
func (r *Receiver) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = nil
}

// WaitFor waits until cond holds for the spans received so far, and returns
// them. It returns an error, with the spans received, after timeout or once
// the receiver is closed. cond is called with a copy, never concurrently.
func (r *Receiver) WaitFor(cond func([]RecordedSpan) bool, timeout time.Duration) ([]RecordedSpan, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		spans, changed := slices.Clone(r.spans), r.changed
		r.mu.Unlock()
		if cond(spans) {
			return spans, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return spans, fmt.Errorf("otlprecv: condition not met within %v (%d spans received: %s)", timeout, len(spans), summary(spans))
		case <-r.done:
			return spans, fmt.Errorf("otlprecv: receiver closed before condition was met (%d spans received)", len(spans))
		}
	}
}

func summary(spans []RecordedSpan) string {
	const max = 20
	var out string
	for i, s := range spans {
		if i == max {
			out += ", …"
			break
		}
		if i > 0 {
			out += ", "
		}
		out += s.Service + "/" + s.Name
	}
	return out
}

// ByTrace returns the spans of one trace, in order.
func ByTrace(spans []RecordedSpan, traceID string) []RecordedSpan {
	var out []RecordedSpan
	for _, s := range spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// Services returns the distinct service names of spans, sorted.
func Services(spans []RecordedSpan) []string {
	var out []string
	for _, s := range spans {
		if !slices.Contains(out, s.Service) {
			out = append(out, s.Service)
		}
	}
	slices.Sort(out)
	return out
}
