// Package config loads the policy service's configuration from the environment,
// strictly: a malformed value or an unknown HANGAR_POLICY_* variable stops the
// service at start with an error naming the variable.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/platform/telemetry"
)

// ServiceName names the service in traces, metrics and logs.
const ServiceName = "hangar-policy"

// Environment variables read by Load (besides the shared tracing ones of
// telemetry.ConfigFromEnv).
const (
	EnvRunInitializationPolicy = "HANGAR_RUN_INITIALIZATION_POLICY"
	EnvGRPCAddr                = "HANGAR_POLICY_GRPC_ADDR"
	EnvDebugAddr               = "HANGAR_POLICY_DEBUG_ADDR"
	EnvTLSCA                   = "HANGAR_TLS_CA"
	EnvTLSCert                 = "HANGAR_TLS_CERT"
	EnvTLSKey                  = "HANGAR_TLS_KEY"
	EnvInsecurePlaintext       = "HANGAR_INSECURE_PLAINTEXT"
	EnvLogLevel                = "HANGAR_LOG_LEVEL"
)

// Defaults.
const (
	DefaultGRPCAddr  = ":7301"
	DefaultDebugAddr = ":9301"
)

// Config is the policy service's configuration.
type Config struct {
	// RunInitializationPolicy is the path of the Rego policy file; empty means
	// no policy: every run is allowed.
	RunInitializationPolicy string
	// GRPCAddr is the host:port the PolicyService listens on.
	GRPCAddr string
	// DebugAddr is the host:port of /metrics, /livez and /readyz.
	DebugAddr string
	// TLSCA, TLSCert and TLSKey are PEM files of the pool-internal CA and of
	// the policy's certificate (role policy, ADR 0008) and key; all three or
	// none. With them the server runs mutual TLS and answers only gateways.
	TLSCA, TLSCert, TLSKey string
	// InsecurePlaintext allows a plaintext server off loopback.
	InsecurePlaintext bool
	// Telemetry is the tracing configuration (HANGAR_OTLP_ENDPOINT, ...).
	Telemetry telemetry.Config
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
}

// Load reads the configuration with r and validates it. Every problem is
// reported at once, each naming its variable.
func Load(r *envconfig.Reader) (Config, error) {
	cfg := Config{
		RunInitializationPolicy: r.ExistingFile(EnvRunInitializationPolicy, ""),
		GRPCAddr:                r.Addr(EnvGRPCAddr, DefaultGRPCAddr),
		DebugAddr:               r.Addr(EnvDebugAddr, DefaultDebugAddr),
		TLSCA:                   r.String(EnvTLSCA, ""),
		TLSCert:                 r.String(EnvTLSCert, ""),
		TLSKey:                  r.String(EnvTLSKey, ""),
		InsecurePlaintext:       r.Bool(EnvInsecurePlaintext, false),
		Telemetry:               telemetry.ConfigFromEnv(r, ServiceName),
	}
	level := r.OneOf(EnvLogLevel, "info", "debug", "info", "warn", "error")
	r.RejectUnknown("HANGAR_POLICY_")
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return Config{}, fmt.Errorf("load config: %s: %w", EnvLogLevel, err)
	}
	if err := errors.Join(r.Err(), cfg.Validate()); err != nil {
		return Config{}, fmt.Errorf("load config: %w", err)
	}
	return cfg, nil
}

// Validate checks the values Load cannot check one variable at a time, and
// reports every problem found.
func (c Config) Validate() error {
	var errs []error
	if err := validateAddr(c.GRPCAddr); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvGRPCAddr, err))
	}
	if err := validateAddr(c.DebugAddr); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvDebugAddr, err))
	}
	if set := btoi(c.TLSCA != "") + btoi(c.TLSCert != "") + btoi(c.TLSKey != ""); set != 0 && set != 3 {
		errs = append(errs, fmt.Errorf("%s, %s, %s: must be set together", EnvTLSCA, EnvTLSCert, EnvTLSKey))
	}
	return errors.Join(errs...)
}

// validateAddr accepts host:port with a numeric port (0 picks a free port).
func validateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid listen address %q: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid listen address %q: port must be a number in 0-65535", addr)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
