// Package serve is the one way every Hangar service serves: a gRPC server
// with health, reflection, tracing, recovery, logging and metrics, and a
// debug HTTP server with /metrics, /livez and /readyz, started together and
// shut down in order.
//
//	srv, err := serve.New(serve.Config{ServiceName: "policy", GRPCAddr: ":7443", DebugAddr: ":9090"},
//		serve.Deps{Logger: log, Registry: reg, Telemetry: tel})
//	policyv1.RegisterPolicyServiceServer(srv.GRPC(), impl)
//	srv.AddReadinessCheck("policy loaded", impl.Ready)
//	return srv.Run(ctx) // until ctx is cancelled
//
// Shutdown order, once ctx is done: /readyz answers 503 and gRPC health
// turns NOT_SERVING; the gRPC server stops gracefully, then forcibly when
// ShutdownTimeout runs out; last, the debug server stops. Flushing
// telemetry is the caller's, after Run returns.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// DefaultShutdownTimeout is used when Config.ShutdownTimeout is zero.
const DefaultShutdownTimeout = 10 * time.Second

// Keepalive policy of every gRPC server. Clients (see package dial) ping no
// more often than every MinClientPingInterval.
const (
	MinClientPingInterval = 10 * time.Second
	serverPingInterval    = 30 * time.Second
	serverPingTimeout     = 10 * time.Second
)

// Config says what a Server listens on.
type Config struct {
	// ServiceName names the service in logs. Required.
	ServiceName string
	// GRPCAddr is the gRPC listen address ("127.0.0.1:0" picks a port).
	// Empty means no gRPC server; GRPC then returns nil.
	GRPCAddr string
	// DebugAddr is the listen address of the plaintext debug HTTP server
	// (/metrics, /livez, /readyz). Empty means no debug server.
	DebugAddr string
	// TLS secures the gRPC server; nil means plaintext. With ClientCAs and
	// RequireAndVerifyClientCert set (tlsconfig.Pool.ServerConfig), clients
	// need a certificate, and Access says which roles may call what. The
	// debug server is always plaintext and serves only /metrics, /livez and
	// /readyz.
	TLS *tls.Config
	// Access lists the roles allowed per method (see Access). It is
	// enforced whenever TLS is set; nil then means no role check.
	Access Access
	// InsecurePlaintext allows a plaintext gRPC server on a non-loopback
	// address (HANGAR_INSECURE_PLAINTEXT). Without it, New refuses one.
	// Plaintext is logged at WARN level at every start either way.
	InsecurePlaintext bool
	// ShutdownTimeout bounds the graceful part of shutdown. Zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// GRPCOptions are a service's own options of its gRPC server (a buffer
	// pool sized for its messages, say), applied after serve's.
	GRPCOptions []grpc.ServerOption
}

// Deps are what a Server uses but does not own.
type Deps struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the gRPC metrics and is served on /metrics; nil
	// means a fresh telemetry.NewRegistry(ServiceName).
	Registry *prometheus.Registry
	// Telemetry traces RPCs; nil means no spans, though incoming trace
	// context still reaches handlers.
	Telemetry *telemetry.Telemetry
}

// Server is a service's gRPC and debug servers.
type Server struct {
	cfg Config
	log *slog.Logger

	grpc      *grpc.Server // nil when GRPCAddr is empty
	healthSrv *grpchealth.Server
	debug     *http.Server // nil when DebugAddr is empty
	mux       *http.ServeMux
	health    *health

	mu       sync.Mutex
	grpcLn   net.Listener
	debugLn  net.Listener
	listened bool
	running  atomic.Bool
}

// New builds a Server. Register gRPC services on GRPC() and readiness
// checks before calling Run.
func New(cfg Config, deps Deps) (*Server, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("serve: service name is required")
	}
	if cfg.GRPCAddr == "" && cfg.DebugAddr == "" {
		return nil, errors.New("serve: neither a gRPC nor a debug address is set")
	}
	if cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("serve: negative shutdown timeout %v", cfg.ShutdownTimeout)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if err := checkPlaintext(cfg); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registry == nil {
		deps.Registry = telemetry.NewRegistry(cfg.ServiceName)
	}
	s := &Server{
		cfg:    cfg,
		log:    deps.Logger,
		health: &health{},
	}
	s.mux = newDebugMux(deps.Registry, s.health)
	if cfg.DebugAddr != "" {
		s.debug = &http.Server{
			Handler:           s.mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(deps.Logger.Handler(), slog.LevelWarn),
		}
	}
	if cfg.GRPCAddr != "" {
		m, err := newMetrics(deps.Registry)
		if err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
		s.grpc = grpc.NewServer(grpcOptions(cfg, deps, m)...)
		s.healthSrv = grpchealth.NewServer()
		s.healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		healthpb.RegisterHealthServer(s.grpc, s.healthSrv)
		reflection.Register(s.grpc)
	}
	return s, nil
}

func grpcOptions(cfg Config, deps Deps, m *metrics) []grpc.ServerOption {
	// A nil Telemetry records no span, but incoming trace context still
	// reaches handlers and whatever they call.
	opts := []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(deps.Telemetry.TracerProvider()),
		otelgrpc.WithPropagators(deps.Telemetry.Propagator()),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(filters.None(
			filters.ServicePrefix("grpc.health."),
			filters.ServicePrefix("grpc.reflection."),
		)),
	))}
	ic := &interceptors{log: deps.Logger, metrics: m}
	unary := []grpc.UnaryServerInterceptor{ic.unary}
	stream := []grpc.StreamServerInterceptor{ic.stream}
	if cfg.TLS != nil && cfg.Access != nil {
		az := &authorizer{access: cfg.Access, log: deps.Logger}
		unary = append(unary, az.unary)
		stream = append(stream, az.stream)
	}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             MinClientPingInterval,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    serverPingInterval,
			Timeout: serverPingTimeout,
		}),
	)
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	return append(opts, cfg.GRPCOptions...)
}

// GRPC returns the gRPC server to register services on, before Run; nil
// when Config.GRPCAddr is empty.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// AddReadinessCheck adds a check that /readyz runs on every request. /readyz
// answers 200 when every check returns nil within 5s, and 503 listing the
// failing checks otherwise. Safe to call at any time.
func (s *Server) AddReadinessCheck(name string, check func(context.Context) error) {
	s.health.add(name, check)
}

// Listen binds the configured listeners, so that callers learn the ports
// before Run. Calling it again does nothing.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listened {
		return nil
	}
	if s.grpc != nil {
		ln, err := net.Listen("tcp", s.cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("serve: listen gRPC: %w", err)
		}
		s.grpcLn = ln
	}
	if s.debug != nil {
		ln, err := net.Listen("tcp", s.cfg.DebugAddr)
		if err != nil {
			if s.grpcLn != nil {
				s.grpcLn.Close()
				s.grpcLn = nil
			}
			return fmt.Errorf("serve: listen debug: %w", err)
		}
		s.debugLn = ln
	}
	s.listened = true
	return nil
}

// GRPCAddr returns the bound gRPC address; nil before Listen or without
// gRPC.
func (s *Server) GRPCAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpcLn == nil {
		return nil
	}
	return s.grpcLn.Addr()
}

// DebugAddr returns the bound debug address; nil before Listen or without
// a debug server.
func (s *Server) DebugAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.debugLn == nil {
		return nil
	}
	return s.debugLn.Addr()
}

// Run listens if Listen has not been called, serves until ctx is done, then
// shuts down in order (see the package doc). It returns nil after a
// shutdown caused by ctx, and an error if a listener fails or if called
// twice.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("serve: Run called twice")
	}
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	grpcLn, debugLn := s.grpcLn, s.debugLn
	s.mu.Unlock()

	type result struct {
		what string
		err  error
	}
	results := make(chan result, 2)
	running := 0
	if grpcLn != nil {
		for name := range s.grpc.GetServiceInfo() {
			s.healthSrv.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
		s.healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		running++
		go func() { results <- result{"gRPC", s.grpc.Serve(grpcLn)} }()
	}
	if debugLn != nil {
		running++
		go func() { results <- result{"debug", s.debug.Serve(debugLn)} }()
	}
	mode := "mutual TLS"
	switch {
	case grpcLn == nil:
		mode = ""
	case s.cfg.TLS == nil:
		mode = "plaintext"
		s.log.WarnContext(ctx, "gRPC serves in PLAINTEXT: no encryption and no authentication; anyone who reaches the port can act as any service of the pool",
			"grpc_addr", addrString(grpcLn), "insecure_plaintext", s.cfg.InsecurePlaintext)
	case s.cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert:
		mode = "TLS without client certificates"
	}
	// The logger names the service (its "service" key): not repeated here.
	s.log.InfoContext(ctx, "serving",
		"grpc_addr", addrString(grpcLn), "grpc_security", mode, "debug_addr", addrString(debugLn))
	if debugLn != nil {
		s.log.InfoContext(ctx, "debug server listening (/metrics, /livez, /readyz only)", "debug_addr", addrString(debugLn))
	}

	var failure error
	select {
	case <-ctx.Done():
	case r := <-results:
		running--
		failure = fmt.Errorf("serve: %s server stopped: %w", r.what, r.err)
		if r.err == nil || errors.Is(r.err, http.ErrServerClosed) {
			failure = fmt.Errorf("serve: %s server stopped unexpectedly", r.what)
		}
		s.log.ErrorContext(ctx, "server failed, shutting down", "error", failure)
	}
	s.shutdown()
	for ; running > 0; running-- {
		r := <-results
		if r.err != nil && !errors.Is(r.err, http.ErrServerClosed) && !errors.Is(r.err, grpc.ErrServerStopped) {
			failure = errors.Join(failure, fmt.Errorf("serve: %s server: %w", r.what, r.err))
		}
	}
	return failure
}

// shutdown stops taking work, drains gRPC within ShutdownTimeout, then
// stops the debug server.
func (s *Server) shutdown() {
	start := time.Now()
	deadline := start.Add(s.cfg.ShutdownTimeout)
	s.health.stopping.Store(true)
	if s.grpc != nil {
		s.healthSrv.Shutdown()
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-stopped:
		case <-timer.C:
			s.log.Warn("graceful stop timed out, closing open RPCs", "timeout", s.cfg.ShutdownTimeout)
			s.grpc.Stop()
			<-stopped
		}
		timer.Stop()
	}
	if s.debug != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if err := s.debug.Shutdown(ctx); err != nil {
			_ = s.debug.Close()
		}
		cancel()
	}
	s.log.Info("stopped", "took", time.Since(start))
}

func addrString(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}
