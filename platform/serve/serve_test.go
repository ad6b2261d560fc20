package serve_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// probe is a hand-written gRPC service for these tests.
const probeService = "hangar.test.v1.Probe"

type probe struct{ blocked chan struct{} }

func (p *probe) register(s *grpc.Server) {
	unary := func(name string, f func() error) grpc.MethodDesc {
		return grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(context.Context, any) (any, error) { return new(emptypb.Empty), f() }
			info := &grpc.UnaryServerInfo{Server: p, FullMethod: "/" + probeService + "/" + name}
			return ic(ctx, in, info, handler)
		}}
	}
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: probeService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			unary("Ping", func() error { return nil }),
			unary("Fail", func() error { return status.Error(codes.NotFound, "no such run") }),
			unary("Panic", func() error { panic("boom in handler") }),
		},
		Streams: []grpc.StreamDesc{
			{StreamName: "Block", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
				p.blocked <- struct{}{}
				<-ss.Context().Done()
				return ss.Context().Err()
			}},
			{StreamName: "PanicStream", ServerStreams: true, Handler: func(any, grpc.ServerStream) error {
				panic("boom in stream")
			}},
		},
	}, p)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	srv    *serve.Server
	probe  *probe
	logs   *syncBuffer
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan error
}

// start runs a Server on loopback with the probe service registered.
func start(t *testing.T, cfg serve.Config, clientCreds credentials.TransportCredentials) *harness {
	t.Helper()
	h := &harness{probe: &probe{blocked: make(chan struct{}, 1)}, logs: &syncBuffer{}}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "testsvc"
	}
	cfg.GRPCAddr, cfg.DebugAddr = "127.0.0.1:0", "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := serve.New(cfg, serve.Deps{Logger: log, Registry: telemetry.NewRegistry(cfg.ServiceName)})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.probe.register(srv.GRPC())
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	if clientCreds == nil {
		clientCreds = insecure.NewCredentials()
	}
	h.conn, err = grpc.NewClient(srv.GRPCAddr().String(), grpc.WithTransportCredentials(clientCreds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.conn.Close() })
	return h
}

func (h *harness) call(ctx context.Context, method string) error {
	return h.conn.Invoke(ctx, "/"+probeService+"/"+method, &emptypb.Empty{}, &emptypb.Empty{})
}

func (h *harness) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + h.srv.DebugAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHealthAndReflection(t *testing.T) {
	h := start(t, serve.Config{}, nil)
	ctx := ctxT(t)
	hc := healthpb.NewHealthClient(h.conn)
	tests := []struct {
		service  string
		want     healthpb.HealthCheckResponse_ServingStatus
		wantCode codes.Code
	}{
		{"", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{probeService, healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"hangar.nope.v1.Nope", 0, codes.NotFound},
	}
	for _, tt := range tests {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: tt.service}, grpc.WaitForReady(true))
		if status.Code(err) != tt.wantCode || resp.GetStatus() != tt.want {
			t.Errorf("Check(%q) = %v, %v; want %v, %v", tt.service, resp.GetStatus(), err, tt.want, tt.wantCode)
		}
	}

	stream, err := reflectionpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"grpc.health.v1.Health", probeService} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	_ = stream.CloseSend()
}

func TestMetricsAndLogging(t *testing.T) {
	h := start(t, serve.Config{}, nil)
	ctx := ctxT(t)
	for _, m := range []string{"Ping", "Ping", "Fail", "Panic"} {
		_ = h.call(ctx, m)
	}
	code, body := h.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`hangar_grpc_server_handled_total{code="OK",method="Ping",service="hangar.test.v1.Probe"} 2`,
		`hangar_grpc_server_handled_total{code="NotFound",method="Fail",service="hangar.test.v1.Probe"} 1`,
		`hangar_grpc_server_handled_total{code="Internal",method="Panic",service="hangar.test.v1.Probe"} 1`,
		`hangar_grpc_server_handling_seconds_count{method="Ping",service="hangar.test.v1.Probe"} 2`,
		`hangar_service_info{`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	logs := h.logs.String()
	for _, want := range []string{
		`level=DEBUG msg="grpc call" method=/hangar.test.v1.Probe/Ping code=OK duration=`,
		`level=DEBUG msg="grpc call" method=/hangar.test.v1.Probe/Fail code=NotFound`,
		`level=WARN msg="grpc call" method=/hangar.test.v1.Probe/Panic code=Internal`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestRecovery(t *testing.T) {
	h := start(t, serve.Config{}, nil)
	ctx := ctxT(t)
	tests := []struct {
		name string
		call func() error
		log  string
	}{
		{"unary", func() error { return h.call(ctx, "Panic") }, "boom in handler"},
		{"stream", func() error {
			s, err := h.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+probeService+"/PanicStream")
			if err != nil {
				return err
			}
			if err := s.SendMsg(&emptypb.Empty{}); err != nil {
				return err
			}
			if err := s.CloseSend(); err != nil {
				return err
			}
			return s.RecvMsg(&emptypb.Empty{})
		}, "boom in stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
				t.Errorf("err = %v, want Internal \"internal error\"", err)
			}
			logs := h.logs.String()
			if !strings.Contains(logs, `msg="grpc handler panicked"`) || !strings.Contains(logs, tt.log) ||
				!strings.Contains(logs, "goroutine ") {
				t.Errorf("logs lack the panic and its stack:\n%s", logs)
			}
			if err := h.call(ctx, "Ping"); err != nil {
				t.Errorf("Ping after panic: %v", err)
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	h := start(t, serve.Config{}, nil)
	if code, body := h.get(t, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz without checks = %d %q", code, body)
	}
	var brokerUp, storeUp atomic.Bool
	check := func(up *atomic.Bool, msg string) func(context.Context) error {
		return func(context.Context) error {
			if up.Load() {
				return nil
			}
			return errors.New(msg)
		}
	}
	h.srv.AddReadinessCheck("broker", check(&brokerUp, "not connected"))
	h.srv.AddReadinessCheck("s3", check(&storeUp, "bucket unreachable"))

	tests := []struct {
		broker, store bool
		wantCode      int
		want, notWant []string
	}{
		{false, false, 503, []string{"broker: not connected", "s3: bucket unreachable"}, nil},
		{true, false, 503, []string{"s3: bucket unreachable"}, []string{"broker"}},
		{true, true, 200, []string{"ok"}, []string{"broker", "s3"}},
		{false, true, 503, []string{"broker: not connected"}, []string{"s3"}},
	}
	for _, tt := range tests {
		brokerUp.Store(tt.broker)
		storeUp.Store(tt.store)
		code, body := h.get(t, "/readyz")
		if code != tt.wantCode {
			t.Errorf("broker=%v s3=%v: /readyz = %d %q, want %d", tt.broker, tt.store, code, body, tt.wantCode)
		}
		for _, w := range tt.want {
			if !strings.Contains(body, w) {
				t.Errorf("broker=%v s3=%v: body %q lacks %q", tt.broker, tt.store, body, w)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(body, w) {
				t.Errorf("broker=%v s3=%v: body %q has %q", tt.broker, tt.store, body, w)
			}
		}
	}

	h.srv.AddReadinessCheck("flaky", func(context.Context) error { panic("check bug") })
	if code, body := h.get(t, "/readyz"); code != 503 || !strings.Contains(body, "flaky: check panicked: check bug") {
		t.Errorf("/readyz with panicking check = %d %q", code, body)
	}
	if code, body := h.get(t, "/livez"); code != 200 || body != "ok\n" {
		t.Errorf("/livez = %d %q", code, body)
	}
}

// TestDebugServesOnlyHealthAndMetrics: nothing but /metrics, /livez and
// /readyz answers on the debug port (no pprof, no expvar, no index).
func TestDebugServesOnlyHealthAndMetrics(t *testing.T) {
	h := start(t, serve.Config{}, nil)
	for _, p := range []string{"/metrics", "/livez", "/readyz"} {
		if code, _ := h.get(t, p); code != 200 {
			t.Errorf("%s = %d, want 200", p, code)
		}
	}
	for _, p := range []string{"/", "/debug/pprof/", "/debug/pprof/heap", "/debug/vars", "/nope", "/metrics/x"} {
		if code, _ := h.get(t, p); code != 404 {
			t.Errorf("%s = %d, want 404", p, code)
		}
	}
}

// TestOrderedShutdown holds a stream open past the shutdown timeout and
// checks each step: health NOT_SERVING and /readyz 503 while gRPC drains,
// the stream cut at the timeout, Run returning nil, both listeners closed.
func TestOrderedShutdown(t *testing.T) {
	const timeout = 500 * time.Millisecond
	h := start(t, serve.Config{ShutdownTimeout: timeout}, nil)
	ctx := ctxT(t)

	watch, err := healthpb.NewHealthClient(h.conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch = %v, %v; want SERVING", resp, err)
	}
	block, err := h.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+probeService+"/Block")
	if err != nil {
		t.Fatal(err)
	}
	if err := block.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	_ = block.CloseSend()
	<-h.probe.blocked

	begin := time.Now()
	h.cancel()
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after cancel = %v, %v; want NOT_SERVING", resp, err)
	}
	if code, body := h.get(t, "/readyz"); code != 503 || body != "shutting down\n" {
		t.Errorf("/readyz while draining = %d %q", code, body)
	}
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(timeout + 5*time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(begin); took < timeout {
		t.Errorf("shutdown took %v, before the blocked stream's timeout %v", took, timeout)
	}
	if err := block.RecvMsg(&emptypb.Empty{}); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("blocked stream ended with %v, want Unavailable or Canceled", err)
	}
	for _, addr := range []net.Addr{h.srv.GRPCAddr(), h.srv.DebugAddr()} {
		if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
	if !strings.Contains(h.logs.String(), "graceful stop timed out") {
		t.Error("no log of the forced stop")
	}
}

func TestQuickShutdownWithoutOpenRPCs(t *testing.T) {
	h := start(t, serve.Config{ShutdownTimeout: time.Minute}, nil)
	if err := h.call(ctxT(t), "Ping"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	h.cancel()
	err := <-h.done
	h.done <- err
	if err != nil || time.Since(begin) > 5*time.Second {
		t.Errorf("Run = %v after %v", err, time.Since(begin))
	}
}

func TestMutualTLS(t *testing.T) {
	ca, err := testpki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := ca.Issue("gateway", "127.0.0.1")
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
	goodTLS, err := tlsconfig.ClientConfig(ca.CertPEM(), clCert, clKey, "")
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, serve.Config{TLS: serverTLS}, credentials.NewTLS(goodTLS))
	ctx := ctxT(t)
	if err := h.call(ctx, "Ping"); err != nil {
		t.Fatalf("Ping over mTLS: %v", err)
	}

	noCertTLS, err := tlsconfig.ClientConfig(ca.CertPEM(), nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"plaintext client", insecure.NewCredentials()},
		{"client without certificate", credentials.NewTLS(noCertTLS)},
		{"client not trusting the server", credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := grpc.NewClient(h.srv.GRPCAddr().String(), grpc.WithTransportCredentials(tt.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			err = conn.Invoke(cctx, "/"+probeService+"/Ping", &emptypb.Empty{}, &emptypb.Empty{})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("Ping = %v, want Unavailable", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  serve.Config
		want string
	}{
		{"no name", serve.Config{GRPCAddr: ":0"}, "service name is required"},
		{"no addresses", serve.Config{ServiceName: "x"}, "neither a gRPC nor a debug address"},
		{"negative timeout", serve.Config{ServiceName: "x", GRPCAddr: ":0", ShutdownTimeout: -1}, "negative shutdown timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := serve.New(tt.cfg, serve.Deps{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestSharedRegistry(t *testing.T) {
	reg := telemetry.NewRegistry("both")
	for range 2 {
		if _, err := serve.New(serve.Config{ServiceName: "x", GRPCAddr: "127.0.0.1:0"}, serve.Deps{Registry: reg}); err != nil {
			t.Fatalf("second server on one registry: %v", err)
		}
	}
}

func TestRunErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	srv, err := serve.New(serve.Config{ServiceName: "x", GRPCAddr: "127.0.0.1:0", DebugAddr: busy.Addr().String()}, serve.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen debug") {
		t.Errorf("Run on a busy port = %v", err)
	}

	srv, err = serve.New(serve.Config{ServiceName: "x", DebugAddr: "127.0.0.1:0"}, serve.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.GRPC() != nil || srv.GRPCAddr() != nil {
		t.Error("GRPC() or GRPCAddr() non-nil without a gRPC address")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for srv.DebugAddr() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Run(ctx); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run = %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestLogsNameTheServiceOnce: the services' loggers carry a "service" key;
// the server's own lines must not add a second one (JSON with a repeated key
// is ambiguous to every log tool).
func TestLogsNameTheServiceOnce(t *testing.T) {
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil)).With("service", "gateway")
	cfg := serve.Config{ServiceName: "hangar-test", GRPCAddr: "127.0.0.1:0", DebugAddr: "127.0.0.1:0", InsecurePlaintext: true}
	srv, err := serve.New(cfg, serve.Deps{Logger: log, Registry: telemetry.NewRegistry(cfg.ServiceName)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	for !strings.Contains(logs.String(), `"msg":"serving"`) {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before serving", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("expected the serving and stopped lines, got:\n%s", logs.String())
	}
	for _, l := range lines {
		if n := strings.Count(l, `"service":`); n != 1 {
			t.Errorf("%d service keys in %s", n, l)
		}
	}
}
