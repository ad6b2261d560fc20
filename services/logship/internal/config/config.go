// Package config reads logship's configuration from its environment,
// strictly: every variable is validated at start, and a bad one stops
// logship with a message naming it. S3 credentials are not read here: the
// AWS SDK's standard chain finds them (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, web identity,
// instance roles).
package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/platform/telemetry"
)

// Bounds of HANGAR_LOG_MAX_BYTES.
const (
	DefaultLogMaxBytes = 64 << 20
	MinLogMaxBytes     = 64 << 10
	MaxLogMaxBytes     = min(1<<40, math.MaxInt) // 1 TiB (less where int is 32 bits)
)

// Config is logship's configuration.
type Config struct {
	// GRPCAddr serves LogService (HANGAR_LOGSHIP_GRPC_ADDR, default ":7302").
	GRPCAddr string
	// DebugAddr serves /metrics, /livez, /readyz (HANGAR_LOGSHIP_DEBUG_ADDR,
	// default ":9302").
	DebugAddr string

	// Bucket receives the logs (HANGAR_S3_BUCKET, required).
	Bucket string
	// Endpoint is a custom S3 endpoint URL for S3-compatible servers
	// (HANGAR_S3_ENDPOINT, optional).
	Endpoint string
	// Region (HANGAR_S3_REGION, default us-east-1).
	Region string
	// PathStyle addresses buckets in the path rather than the host name
	// (HANGAR_S3_PATH_STYLE, default false).
	PathStyle bool
	// Prefix starts every key (HANGAR_S3_PREFIX, default "runs/").
	Prefix string

	// SpoolDir keeps the logs until uploaded (HANGAR_LOGSHIP_SPOOL_DIR,
	// default /var/lib/hangar/logship).
	SpoolDir string
	// MaskMinLength is the shortest secret masked (HANGAR_MASK_MIN_LENGTH,
	// default 6).
	MaskMinLength int
	// MaskKnownFormats masks well-known credential formats (GitHub, GitLab,
	// AWS, Slack, Google, Stripe tokens, private-key blocks, JWTs; see
	// docs/MASKING.md) even when no run declared them
	// (HANGAR_MASK_KNOWN_FORMATS, default true).
	MaskKnownFormats bool
	// ChunkInterval is how often live chunks are uploaded
	// (HANGAR_LOGSHIP_CHUNK_INTERVAL, default 5s).
	ChunkInterval time.Duration
	// CloseWait bounds how long answering Close waits for the final upload
	// (HANGAR_LOGSHIP_CLOSE_WAIT, default 30s).
	CloseWait time.Duration
	// LogMaxBytes limits each run's stored log: the first half and the last
	// half are kept, with a notice of the bytes cut between them
	// (HANGAR_LOG_MAX_BYTES, default 64 MiB, at least 64 KiB).
	LogMaxBytes int64
	// RunLogsOnStdout also writes every masked line of every run to
	// logship's standard output as JSON (HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT,
	// default false).
	RunLogsOnStdout bool
	// LogIdleClose closes the log of a run that received nothing (no
	// chunk, no Open) for this long, marked incomplete: its executor did
	// not come back (HANGAR_LOG_IDLE_CLOSE, default 30m; keep it above the
	// executors' HANGAR_LOGS_TIMEOUT).
	LogIdleClose time.Duration
	// SpoolMinFreeMB: below this many MiB free on the spool's file system,
	// logship takes no new run and /readyz fails, until space returns
	// (HANGAR_SPOOL_MIN_FREE_MB, default 1024; 0: no guard).
	SpoolMinFreeMB int

	// TLSCA, TLSCert and TLSKey are the pool-internal CA and logship's
	// certificate (role logship, ADR 0008) and key (HANGAR_TLS_CA,
	// HANGAR_TLS_CERT, HANGAR_TLS_KEY; all three or none). With them, Ship
	// is open to executors holding a run credential, Tail to operators.
	TLSCA, TLSCert, TLSKey string
	// InsecurePlaintext allows a plaintext server off loopback
	// (HANGAR_INSECURE_PLAINTEXT).
	InsecurePlaintext bool
	// Telemetry says where traces go (HANGAR_OTLP_*).
	Telemetry telemetry.Config
	// AccessKeyID, SecretKey and SessionToken are static S3 credentials when
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are given in the configuration
	// (as the AWS SDK's chain would read them); otherwise the SDK's standard
	// chain applies (profiles, web identity, instance roles...).
	AccessKeyID, SecretKey, SessionToken string
	// LogLevel is debug, info, warn or error (HANGAR_LOG_LEVEL).
	LogLevel string
}

// Load reads the configuration from r (envconfig.FromOS() in main).
func Load(r *envconfig.Reader) (*Config, error) {
	c := &Config{
		GRPCAddr:          r.Addr("HANGAR_LOGSHIP_GRPC_ADDR", ":7302"),
		DebugAddr:         r.Addr("HANGAR_LOGSHIP_DEBUG_ADDR", ":9302"),
		Bucket:            r.Required("HANGAR_S3_BUCKET"),
		Endpoint:          r.String("HANGAR_S3_ENDPOINT", ""),
		Region:            r.String("HANGAR_S3_REGION", "us-east-1"),
		PathStyle:         r.Bool("HANGAR_S3_PATH_STYLE", false),
		Prefix:            r.String("HANGAR_S3_PREFIX", "runs/"),
		SpoolDir:          r.StateDir("HANGAR_LOGSHIP_SPOOL_DIR", "/var/lib/hangar/logship"),
		MaskMinLength:     r.Int("HANGAR_MASK_MIN_LENGTH", 6, 1, 1024),
		ChunkInterval:     r.Duration("HANGAR_LOGSHIP_CHUNK_INTERVAL", 5*time.Second),
		CloseWait:         r.Duration("HANGAR_LOGSHIP_CLOSE_WAIT", 30*time.Second),
		LogMaxBytes:       int64(r.Int("HANGAR_LOG_MAX_BYTES", DefaultLogMaxBytes, MinLogMaxBytes, MaxLogMaxBytes)),
		RunLogsOnStdout:   r.Bool("HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT", false),
		LogIdleClose:      r.Duration("HANGAR_LOG_IDLE_CLOSE", 30*time.Minute),
		SpoolMinFreeMB:    r.Int("HANGAR_SPOOL_MIN_FREE_MB", 1024, 0, 1<<30),
		TLSCA:             r.String("HANGAR_TLS_CA", ""),
		TLSCert:           r.String("HANGAR_TLS_CERT", ""),
		TLSKey:            r.String("HANGAR_TLS_KEY", ""),
		InsecurePlaintext: r.Bool("HANGAR_INSECURE_PLAINTEXT", false),
		Telemetry:         telemetry.ConfigFromEnv(r, "hangar-logship"),
		AccessKeyID:       r.String("AWS_ACCESS_KEY_ID", ""),
		SecretKey:         r.String("AWS_SECRET_ACCESS_KEY", ""),
		SessionToken:      r.String("AWS_SESSION_TOKEN", ""),
		LogLevel:          r.OneOf("HANGAR_LOG_LEVEL", "info", "debug", "info", "warn", "error"),
	}
	c.MaskKnownFormats = r.Bool("HANGAR_MASK_KNOWN_FORMATS", true)
	errs := []error{r.Err()}
	if n := btoi(c.TLSCA != "") + btoi(c.TLSCert != "") + btoi(c.TLSKey != ""); n != 0 && n != 3 {
		errs = append(errs, fmt.Errorf("HANGAR_TLS_CA, HANGAR_TLS_CERT, HANGAR_TLS_KEY: set all three or none"))
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("HANGAR_S3_ENDPOINT: invalid URL %q (want http(s)://host[:port])", c.Endpoint))
		}
	}
	if c.LogIdleClose < time.Minute {
		errs = append(errs, fmt.Errorf("HANGAR_LOG_IDLE_CLOSE: %s is too short (at least 1m; keep it above the executors' HANGAR_LOGS_TIMEOUT)", c.LogIdleClose))
	}
	if c.Prefix != "" && (strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/")) {
		errs = append(errs, fmt.Errorf("HANGAR_S3_PREFIX: %q must not start with / and must end with /", c.Prefix))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
