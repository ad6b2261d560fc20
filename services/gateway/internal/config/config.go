// Package config reads the gateway's configuration from its environment, strictly:
// every variable is validated at start, and a bad one stops the gateway with a
// message naming it.
package config

import (
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"os"
	"time"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/platform/pooltoken"
	"github.com/hangar-dev/hangar/platform/telemetry"
)

// Config is the gateway's configuration.
type Config struct {
	// Token is the pool token (HANGAR_TOKEN).
	Token *pooltoken.Token
	// PoolKey is the pool's private key (HANGAR_POOL_PRIVATE_KEY).
	PoolKey *rsa.PrivateKey
	// VerifyKey is the control plane's run-verification key, from the token.
	VerifyKey ed25519.PublicKey

	// WorkerID names this gateway in heartbeats and events (HANGAR_WORKER_ID,
	// default: the host name).
	WorkerID string
	// Metadata are the HANGAR_METADATA_<key> tags.
	Metadata map[string]string

	// PolicyAddr is the policy service's gRPC address (HANGAR_POLICY_ADDR).
	PolicyAddr string
	// PolicyTimeout bounds one policy decision, retries included
	// (HANGAR_POLICY_TIMEOUT).
	PolicyTimeout time.Duration

	// GRPCAddr is where executors attach (HANGAR_GATEWAY_GRPC_ADDR).
	GRPCAddr string
	// DebugAddr serves /metrics, /livez, /readyz (HANGAR_GATEWAY_DEBUG_ADDR).
	DebugAddr string
	// DataDir keeps the gateway's state across restarts (HANGAR_GATEWAY_DATA_DIR).
	DataDir string

	// HeartbeatInterval is how often heartbeats are published
	// (HANGAR_HEARTBEAT_INTERVAL).
	HeartbeatInterval time.Duration
	// MaxEnvelopeBytes is the largest run envelope accepted
	// (HANGAR_MAX_ENVELOPE_BYTES).
	MaxEnvelopeBytes int
	// ClockSkew is the tolerance for envelopes issued in the future
	// (HANGAR_CLOCK_SKEW).
	ClockSkew time.Duration
	// LeaseDuration is how long an executor holds a run without renewing it
	// (HANGAR_LEASE_DURATION); executors renew every third of it.
	LeaseDuration time.Duration
	// CancelGrace is sent with cancellations (HANGAR_CANCEL_GRACE).
	CancelGrace time.Duration
	// SharedSubscription makes several gateways of one pool split its runs
	// (MQTT shared subscription): each run is taken by exactly one
	// (HANGAR_GATEWAY_SHARED_SUBSCRIPTION).
	SharedSubscription bool
	// IntakeWorkers is how many envelopes are verified concurrently
	// (HANGAR_INTAKE_WORKERS).
	IntakeWorkers int

	// TLSCA, TLSCert and TLSKey are the pool-internal CA and the gateway's
	// certificate (role gateway, ADR 0008) and key: mutual TLS of the
	// executors' server and of the policy client (HANGAR_TLS_CA,
	// HANGAR_TLS_CERT, HANGAR_TLS_KEY; all three or none).
	TLSCA, TLSCert, TLSKey string
	// InsecurePlaintext allows plaintext gRPC off loopback
	// (HANGAR_INSECURE_PLAINTEXT).
	InsecurePlaintext bool
	// LogCredentialTTL is the validity of the run credentials issued with
	// Assign (HANGAR_LOG_CREDENTIAL_TTL, ADR 0009).
	LogCredentialTTL time.Duration

	// Telemetry says where traces go (HANGAR_OTLP_*).
	Telemetry telemetry.Config
	// LogLevel is debug, info, warn or error (HANGAR_LOG_LEVEL).
	LogLevel string
}

// Load reads the configuration from r (envconfig.FromOS() in main).
func Load(r *envconfig.Reader) (*Config, error) {
	c := &Config{}

	rawToken := r.SecretOrFile("HANGAR_TOKEN")
	rawKey := r.SecretOrFile("HANGAR_POOL_PRIVATE_KEY")

	host, _ := os.Hostname()
	c.WorkerID = r.String("HANGAR_WORKER_ID", host)
	c.Metadata = r.Prefixed("HANGAR_METADATA_")
	c.PolicyAddr = r.Addr("HANGAR_POLICY_ADDR", "127.0.0.1:7301")
	c.PolicyTimeout = r.Duration("HANGAR_POLICY_TIMEOUT", 30*time.Second)
	c.GRPCAddr = r.Addr("HANGAR_GATEWAY_GRPC_ADDR", ":7300")
	c.DebugAddr = r.Addr("HANGAR_GATEWAY_DEBUG_ADDR", ":9300")
	c.DataDir = r.StateDir("HANGAR_GATEWAY_DATA_DIR", "/var/lib/hangar/gateway")
	c.HeartbeatInterval = r.Duration("HANGAR_HEARTBEAT_INTERVAL", 15*time.Second)
	c.MaxEnvelopeBytes = r.Int("HANGAR_MAX_ENVELOPE_BYTES", 1<<20, 1024, 64<<20)
	c.ClockSkew = r.Duration("HANGAR_CLOCK_SKEW", time.Minute)
	c.LeaseDuration = r.Duration("HANGAR_LEASE_DURATION", 30*time.Second)
	c.CancelGrace = r.Duration("HANGAR_CANCEL_GRACE", 10*time.Second)
	c.SharedSubscription = r.Bool("HANGAR_GATEWAY_SHARED_SUBSCRIPTION", false)
	c.IntakeWorkers = r.Int("HANGAR_INTAKE_WORKERS", 4, 1, 256)
	c.TLSCA = r.String("HANGAR_TLS_CA", "")
	c.TLSCert = r.String("HANGAR_TLS_CERT", "")
	c.TLSKey = r.String("HANGAR_TLS_KEY", "")
	c.InsecurePlaintext = r.Bool("HANGAR_INSECURE_PLAINTEXT", false)
	c.LogCredentialTTL = r.Duration("HANGAR_LOG_CREDENTIAL_TTL", 2*time.Hour)
	c.Telemetry = telemetry.ConfigFromEnv(r, "hangar-gateway")
	c.LogLevel = r.OneOf("HANGAR_LOG_LEVEL", "info", "debug", "info", "warn", "error")
	if err := r.Err(); err != nil {
		return nil, err
	}
	if c.WorkerID == "" {
		return nil, fmt.Errorf("HANGAR_WORKER_ID: required (the host name is unknown)")
	}

	tok, err := pooltoken.Parse(rawToken)
	if err != nil {
		return nil, fmt.Errorf("HANGAR_TOKEN: %w", err)
	}
	key, err := pooltoken.ParsePrivateKeyB64(rawKey)
	if err != nil {
		return nil, fmt.Errorf("HANGAR_POOL_PRIVATE_KEY: %w", err)
	}
	if err := pooltoken.MatchKey(tok, key); err != nil {
		return nil, fmt.Errorf("HANGAR_POOL_PRIVATE_KEY: does not match the certificate in HANGAR_TOKEN: %w", err)
	}
	c.Token, c.PoolKey = tok, key
	if err := tok.CheckValidity(time.Now()); err != nil {
		return nil, fmt.Errorf("HANGAR_TOKEN: %w", err)
	}
	c.VerifyKey, err = tok.VerifyKey()
	if err != nil {
		return nil, fmt.Errorf("HANGAR_TOKEN: %w", err)
	}
	if c.LeaseDuration < 3*time.Second {
		return nil, fmt.Errorf("HANGAR_LEASE_DURATION: %v is too short (at least 3s: executors renew every third of it)", c.LeaseDuration)
	}
	if n := nonEmpty(c.TLSCA, c.TLSCert, c.TLSKey); n != 0 && n != 3 {
		return nil, fmt.Errorf("HANGAR_TLS_CA, HANGAR_TLS_CERT, HANGAR_TLS_KEY: set all three or none")
	}
	if c.LogCredentialTTL < time.Minute || c.LogCredentialTTL > 48*time.Hour {
		return nil, fmt.Errorf("HANGAR_LOG_CREDENTIAL_TTL: %v out of range [1m, 48h]", c.LogCredentialTTL)
	}
	return c, nil
}

func nonEmpty(vals ...string) int {
	n := 0
	for _, v := range vals {
		if v != "" {
			n++
		}
	}
	return n
}
