package dial_test

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/dial"
	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/telemetry/otlprecv"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

const echoMethod = "/hangar.test.v1.Echo/Ping"

// echo records the span context each call's handler sees.
type echo struct{ seen chan trace.SpanContext }

func (e *echo) register(s *grpc.Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "hangar.test.v1.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Ping", Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{Server: e, FullMethod: echoMethod}, func(ctx context.Context, _ any) (any, error) {
				e.seen <- trace.SpanContextFromContext(ctx)
				return new(emptypb.Empty), nil
			})
		}}},
	}, e)
}

// startServer runs a serve.Server with the echo service and returns its
// address and the echo.
func startServer(t *testing.T, tlsConf *tls.Config, tel *telemetry.Telemetry) (string, *echo) {
	t.Helper()
	srv, err := serve.New(serve.Config{ServiceName: "gateway", GRPCAddr: "127.0.0.1:0", TLS: tlsConf},
		serve.Deps{Telemetry: tel})
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{seen: make(chan trace.SpanContext, 10)}
	e.register(srv.GRPC())
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv.GRPCAddr().String(), e
}

func dialT(t *testing.T, target string, tlsConf *tls.Config, tel *telemetry.Telemetry) *grpc.ClientConn {
	t.Helper()
	conn, err := dial.Dial(target, dial.Security{TLS: tlsConf}, tel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDialTLS(t *testing.T) {
	ca, err := testpki.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := ca.Issue("gateway", "127.0.0.1", "gateway.hangar.test")
	if err != nil {
		t.Fatal(err)
	}
	clCert, clKey, err := ca.Issue("executor")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, err := tlsconfig.ServerConfig(srvCert, srvKey, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	mtlsAddr, _ := startServer(t, serverTLS, nil)
	plainAddr, _ := startServer(t, nil, nil)

	client := func(cert, key []byte, name string) *tls.Config {
		c, err := tlsconfig.ClientConfig(ca.CertPEM(), cert, key, name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name     string
		target   string
		tls      *tls.Config
		wantCode codes.Code
	}{
		{"plaintext", plainAddr, nil, codes.OK},
		{"mutual TLS", mtlsAddr, client(clCert, clKey, ""), codes.OK},
		{"mutual TLS with server name", mtlsAddr, client(clCert, clKey, "gateway.hangar.test"), codes.OK},
		{"passthrough target", "passthrough:///" + mtlsAddr, client(clCert, clKey, ""), codes.OK},
		{"plaintext to TLS server", mtlsAddr, nil, codes.Unavailable},
		{"no client certificate", mtlsAddr, client(nil, nil, ""), codes.Unavailable},
		{"TLS to plaintext server", plainAddr, client(clCert, clKey, ""), codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialT(t, tt.target, tt.tls, nil)
			ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("Check = %v, want %v", err, tt.wantCode)
			}
			if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("status = %v", resp.GetStatus())
			}
		})
	}
}

// TestTracePropagation checks that a trace started by a client service
// continues in the server service, spans recorded by a real OTLP receiver.
func TestTracePropagation(t *testing.T) {
	ctx := ctxT(t)
	rcv, err := otlprecv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.Close) // after the exporters' shutdown, registered later
	setup := func(name string) *telemetry.Telemetry {
		tel, err := telemetry.Setup(ctx, telemetry.Config{
			ServiceName: name, OTLPEndpoint: rcv.Addr(), Insecure: true, BatchTimeout: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
		return tel
	}
	gwTel, exTel := setup("gateway"), setup("executor")
	addr, e := startServer(t, nil, gwTel)
	conn := dialT(t, addr, nil, exTel)

	opCtx, op := exTel.Tracer("test").Start(ctx, "take work")
	if err := conn.Invoke(opCtx, echoMethod, &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	op.End()
	traceID := op.SpanContext().TraceID()
	if seen := <-e.seen; seen.TraceID() != traceID {
		t.Errorf("handler saw trace %s, want %s", seen.TraceID(), traceID)
	}

	spans, err := rcv.WaitFor(func(s []otlprecv.RecordedSpan) bool {
		return len(otlprecv.ByTrace(s, traceID.String())) >= 3
	}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := otlprecv.ByTrace(spans, traceID.String())
	if svcs := otlprecv.Services(got); !slices.Equal(svcs, []string{"executor", "gateway"}) {
		t.Errorf("services = %v", svcs)
	}
	var client, server otlprecv.RecordedSpan
	for _, s := range got {
		switch s.Kind {
		case "CLIENT":
			client = s
		case "SERVER":
			server = s
		}
	}
	if client.Service != "executor" || client.ParentSpanID != op.SpanContext().SpanID().String() {
		t.Errorf("client span = %+v", client)
	}
	if server.Service != "gateway" || server.ParentSpanID != client.SpanID || server.Name != "hangar.test.v1.Echo/Ping" {
		t.Errorf("server span = %+v, want child of client span %s", server, client.SpanID)
	}
}

// TestTraceContextPassesThroughWithoutTelemetry: with tracing off on both
// sides, a trace context from upstream (say, an MQTT payload) still reaches
// the next service.
func TestTraceContextPassesThroughWithoutTelemetry(t *testing.T) {
	addr, e := startServer(t, nil, nil)
	conn := dialT(t, addr, nil, nil)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := telemetry.Extract(ctxT(t), nil, map[string]string{telemetry.KeyTraceparent: tp})
	if err := conn.Invoke(ctx, echoMethod, &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if seen := <-e.seen; seen.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("handler saw trace %s", seen.TraceID())
	}
}

func TestDialErrors(t *testing.T) {
	if _, err := dial.Dial("", dial.Security{}, nil); err == nil {
		t.Error("Dial(\"\") succeeded")
	}
	if dial.KeepaliveTime < serve.MinClientPingInterval {
		t.Errorf("KeepaliveTime %v below the servers' minimum %v", dial.KeepaliveTime, serve.MinClientPingInterval)
	}
}

// TestDialRefusesPlaintextOffLoopback: Dial itself enforces the plaintext
// rule, so a caller that forgets CheckPlaintext still cannot reach another
// host in clear.
func TestDialRefusesPlaintextOffLoopback(t *testing.T) {
	if _, err := dial.Dial("gateway:7300", dial.Security{}, nil); err == nil || !strings.Contains(err.Error(), "plaintext") {
		t.Errorf("plaintext Dial off loopback: %v, want a refusal", err)
	}
	for _, sec := range []dial.Security{{InsecurePlaintext: true}, {TLS: &tls.Config{MinVersion: tls.VersionTLS13}}} {
		conn, err := dial.Dial("gateway:7300", sec, nil)
		if err != nil {
			t.Errorf("Dial off loopback with %+v: %v", sec, err)
			continue
		}
		conn.Close()
	}
	conn, err := dial.Dial("127.0.0.1:7300", dial.Security{}, nil)
	if err != nil {
		t.Fatalf("plaintext Dial on loopback: %v", err)
	}
	conn.Close()
}

func TestCheckPlaintext(t *testing.T) {
	for _, tt := range []struct {
		target   string
		insecure bool
		ok       bool
	}{
		{"127.0.0.1:7300", false, true},
		{"localhost:7300", false, true},
		{"dns:///localhost:7300", false, true},
		{"[::1]:7300", false, true},
		{"gateway:7300", false, false},
		{"dns:///gateway:7300", false, false},
		{"10.0.0.5:7300", false, false},
		{"gateway:7300", true, true},
	} {
		if err := dial.CheckPlaintext(tt.target, tt.insecure); (err == nil) != tt.ok {
			t.Errorf("CheckPlaintext(%s, %v) = %v, ok want %v", tt.target, tt.insecure, err, tt.ok)
		}
	}
}
