// Package app wires logship: the S3 store, the spool, the run manager
// (masking, acknowledgements, uploads) and the LogService gRPC server, under
// one context, shut down in order.
package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/platform/runcred"
	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/services/logship/internal/config"
	"github.com/hangar-dev/hangar/services/logship/internal/runlog"
	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/ship"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// Run runs logship until ctx is done. stdout receives the runs' masked
// lines when cfg.RunLogsOnStdout is set (os.Stdout in main).
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	reg := telemetry.NewRegistry("logship")
	tel, err := telemetry.Setup(ctx, cfg.Telemetry)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()

	awsOpts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region), awsconfig.WithRetryMaxAttempts(2)}
	if cfg.AccessKeyID != "" {
		awsOpts = append(awsOpts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretKey, cfg.SessionToken)))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsOpts...)
	if err != nil {
		return fmt.Errorf("S3 configuration: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = &cfg.Endpoint
		}
		o.UsePathStyle = cfg.PathStyle
	})
	store, err := s3log.New(client, cfg.Bucket, cfg.Prefix, reg)
	if err != nil {
		return err
	}
	sp, err := spool.Open(cfg.SpoolDir)
	if err != nil {
		return fmt.Errorf("HANGAR_LOGSHIP_SPOOL_DIR: %w", err)
	}
	runOpts := runlog.Options{
		Spool: sp, Store: store, MinSecretLength: cfg.MaskMinLength, DisableKnownFormats: !cfg.MaskKnownFormats, ChunkInterval: cfg.ChunkInterval,
		CloseWait: cfg.CloseWait, RetryMin: 200 * time.Millisecond, RetryMax: 30 * time.Second,
		MaxLogBytes: cfg.LogMaxBytes, IdleClose: cfg.LogIdleClose, MinFreeBytes: int64(cfg.SpoolMinFreeMB) << 20,
		Logger: log, Registry: reg,
	}
	if cfg.RunLogsOnStdout {
		runOpts.Stdout = stdout
	}
	runs, err := runlog.New(runOpts)
	if err != nil {
		return err
	}
	defer runs.Close()

	// Mutual TLS (ADR 0008): Ship from executors with the run's credential
	// (ADR 0009), Tail from operators.
	poolTLS, err := tlsconfig.LoadPoolFiles(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, tlsconfig.RoleLogship)
	if err != nil {
		return fmt.Errorf("HANGAR_TLS_*: %w", err)
	}
	var serverTLS *tls.Config
	var authorize ship.Authorizer
	if poolTLS != nil {
		serverTLS = poolTLS.ServerConfig()
		authorize = ship.CredentialAuthorizer(runcred.NewChecker(poolTLS))
		log.Info("gRPC uses mutual TLS: Ship needs an executor certificate and the run's credential, Tail an operator certificate",
			"identity", poolTLS.Identity.String())
	}
	srv, err := serve.New(serve.Config{ServiceName: "logship", GRPCAddr: cfg.GRPCAddr, DebugAddr: cfg.DebugAddr, TLS: serverTLS,
		InsecurePlaintext: cfg.InsecurePlaintext, Access: serve.Access{
			logsv1.LogService_Ship_FullMethodName: {tlsconfig.RoleExecutor},
			logsv1.LogService_Tail_FullMethodName: {tlsconfig.RoleOperator},
		}, GRPCOptions: ship.ServerOptions()},
		serve.Deps{Logger: log, Registry: reg, Telemetry: tel})
	if err != nil {
		return err
	}
	logsv1.RegisterLogServiceServer(srv.GRPC(), ship.New(ship.Deps{
		Runs: runs, Finals: store, Tracer: tel.Tracer("hangar/logship"), Propagator: tel.Propagator(), Logger: log,
		Authorize: authorize,
	}))
	srv.AddReadinessCheck("spool", func(context.Context) error {
		if _, err := os.Stat(sp.Dir()); err != nil {
			return fmt.Errorf("spool directory: %w", err)
		}
		return runs.SpoolReady()
	})
	if err := srv.Listen(); err != nil {
		return err
	}
	log.Info("logship listening", "grpc", srv.GRPCAddr().String(), "debug", srv.DebugAddr().String(),
		"bucket", cfg.Bucket, "endpoint", cfg.Endpoint, "prefix", cfg.Prefix, "spool", cfg.SpoolDir,
		"log_max_bytes", cfg.LogMaxBytes, "run_logs_on_standard_output", cfg.RunLogsOnStdout,
		"log_idle_close", cfg.LogIdleClose, "spool_min_free_mb", cfg.SpoolMinFreeMB)
	// serve stops taking streams and drains them; then the deferred
	// runs.Close stops the uploaders (unfinished uploads resume at the next
	// start), then telemetry is flushed.
	return srv.Run(ctx)
}

// NewLogger returns logship's JSON logger on stderr.
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With("service", "logship")
}
