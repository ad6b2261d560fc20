// Package app wires the policy service: it compiles the run-initialization
// policy, sets up telemetry and metrics, and serves the PolicyService over
// gRPC (with a debug server for /metrics, /livez and /readyz).
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/services/policy/internal/config"
	"github.com/hangar-dev/hangar/services/policy/internal/engine"
	"github.com/hangar-dev/hangar/services/policy/internal/policyserver"
	"github.com/prometheus/client_golang/prometheus"
)

// NoPolicyMessage is logged once at start when no policy is configured.
const NoPolicyMessage = "no run-initialization policy configured: every run is allowed"

// telemetryFlushTimeout bounds the flush of pending spans at shutdown.
const telemetryFlushTimeout = 5 * time.Second

// Deps are what the service uses but does not own.
type Deps struct {
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the service's metrics and is served on /metrics; nil
	// means a fresh telemetry.NewRegistry(config.ServiceName).
	Registry *prometheus.Registry
}

// App is the policy service, listening but not yet serving.
type App struct {
	log *slog.Logger
	srv *serve.Server
	tel *telemetry.Telemetry
}

// Run builds the service and serves until ctx is cancelled. It returns an error
// without serving when the policy is invalid (the error lists each problem as
// "file:row: message") or the configuration cannot be applied.
func Run(ctx context.Context, cfg config.Config, deps Deps) error {
	a, err := New(ctx, cfg, deps)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New compiles the policy, sets up telemetry and binds the listeners, so that
// a caller learns the addresses (GRPCAddr, DebugAddr) before Run.
func New(ctx context.Context, cfg config.Config, deps Deps) (_ *App, err error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg := deps.Registry
	if reg == nil {
		reg = telemetry.NewRegistry(config.ServiceName)
	}

	eng, err := engine.Load(ctx, cfg.RunInitializationPolicy)
	if err != nil {
		return nil, fmt.Errorf("load run-initialization policy: %w", err)
	}
	if eng.Enabled() {
		log.InfoContext(ctx, "run-initialization policy loaded", "file", eng.File())
	} else {
		log.WarnContext(ctx, NoPolicyMessage)
	}

	poolTLS, err := tlsconfig.LoadPoolFiles(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, tlsconfig.RolePolicy)
	if err != nil {
		return nil, fmt.Errorf("gRPC server TLS (HANGAR_TLS_*): %w", err)
	}
	var tlsCfg *tls.Config
	if poolTLS != nil {
		tlsCfg = poolTLS.ServerConfig()
		log.InfoContext(ctx, "gRPC uses mutual TLS; only gateways may call", "identity", poolTLS.Identity.String())
	}

	tel, err := telemetry.Setup(ctx, cfg.Telemetry)
	if err != nil {
		return nil, fmt.Errorf("set up telemetry: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, shutdownTelemetry(tel))
		}
	}()

	metrics, err := policyserver.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	srv, err := serve.New(serve.Config{
		ServiceName: config.ServiceName,
		GRPCAddr:    cfg.GRPCAddr,
		DebugAddr:   cfg.DebugAddr,
		TLS:         tlsCfg,
		// Only the gateway asks for decisions (ADR 0008).
		Access:            serve.Access{policyv1.PolicyService_Evaluate_FullMethodName: {tlsconfig.RoleGateway}},
		InsecurePlaintext: cfg.InsecurePlaintext,
	}, serve.Deps{Logger: log, Registry: reg, Telemetry: tel})
	if err != nil {
		return nil, fmt.Errorf("create server: %w", err)
	}
	policyv1.RegisterPolicyServiceServer(srv.GRPC(),
		policyserver.New(eng, metrics, tel.Tracer("github.com/hangar-dev/hangar/services/policy"), log))
	if err := srv.Listen(); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return &App{log: log, srv: srv, tel: tel}, nil
}

// GRPCAddr returns the bound gRPC address.
func (a *App) GRPCAddr() net.Addr { return a.srv.GRPCAddr() }

// DebugAddr returns the bound debug HTTP address.
func (a *App) DebugAddr() net.Addr { return a.srv.DebugAddr() }

// Run serves until ctx is cancelled, shuts the servers down in order, then
// flushes telemetry. It returns nil after a shutdown caused by ctx.
func (a *App) Run(ctx context.Context) error {
	err := a.srv.Run(ctx)
	return errors.Join(err, shutdownTelemetry(a.tel))
}

func shutdownTelemetry(tel *telemetry.Telemetry) error {
	ctx, cancel := context.WithTimeout(context.Background(), telemetryFlushTimeout)
	defer cancel()
	return tel.Shutdown(ctx)
}
