// Package app wires the executor: the runtime (Docker or process), the clients
// of the gateway and logship, the worker that takes runs under leases, and the
// debug server; and the two-step stop (drain, then cancel).
package app

import (
	"context"
	"crypto/tls"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/dial"
	"github.com/hangar-dev/hangar/platform/serve"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/services/executor/internal/admission"
	"github.com/hangar-dev/hangar/services/executor/internal/config"
	"github.com/hangar-dev/hangar/services/executor/internal/dockerrt"
	"github.com/hangar-dev/hangar/services/executor/internal/execute"
	"github.com/hangar-dev/hangar/services/executor/internal/handoff"
	"github.com/hangar-dev/hangar/services/executor/internal/kubert"
	"github.com/hangar-dev/hangar/services/executor/internal/mountguard"
	"github.com/hangar-dev/hangar/services/executor/internal/processrt"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
	"github.com/hangar-dev/hangar/services/executor/internal/worker"
	"github.com/hangar-dev/hangar/services/executor/internal/workspace"
)

// Version is reported to the gateway.
const Version = "0.1.0"

// Signals are the operator's stop requests: the first drains, the second
// cancels the runs.
type Signals struct {
	Drain  <-chan struct{}
	Cancel <-chan struct{}
}

// Run runs the executor until it is stopped: after a drain once its runs are
// done, or after a cancel once they are stopped, or when the control plane
// cycles the pool.
func Run(ctx context.Context, cfg *config.Config, sig Signals, log *slog.Logger) error {
	reg := telemetry.NewRegistry("executor")
	tel, err := telemetry.Setup(ctx, cfg.Telemetry)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()

	rt, reap, err := newRuntime(ctx, cfg, reg, log)
	if err != nil {
		return err
	}
	if c, ok := rt.(*dockerrt.Runtime); ok {
		// Its idle network holder goes with the executor.
		defer c.Close()
	}
	stateDir := filepath.Join(cfg.WorkDir, "hangar-executor-"+cfg.ExecutorID+".runs")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("HANGAR_EXECUTOR_WORK_DIR: %w", err)
	}
	// Workspaces of runs an earlier life of this executor was running.
	if stale, err := workspace.RemoveStale(cfg.WorkDir, cfg.ExecutorID); err != nil {
		log.Warn("removing workspaces left by an earlier run of this executor failed", "err", err)
	} else if len(stale) > 0 {
		log.Warn("removed workspaces left by an earlier run of this executor", "count", len(stale))
	}

	// Mutual TLS (ADR 0008): the gateway and logship are known by the role
	// in their certificates.
	var gwTLS, lsTLS *tls.Config
	if cfg.PoolTLS != nil {
		gwTLS, lsTLS = cfg.PoolTLS.ClientConfig(tlsconfig.RoleGateway), cfg.PoolTLS.ClientConfig(tlsconfig.RoleLogship)
		log.Info("in-pool gRPC uses mutual TLS", "identity", cfg.PoolTLS.Identity.String())
	} else {
		log.Warn("in-pool gRPC in PLAINTEXT: no encryption, no authentication (no HANGAR_TLS_*)", "insecure_plaintext", cfg.InsecurePlaintext)
	}
	gwConn, err := dial.Dial(cfg.GatewayAddr, dial.Security{TLS: gwTLS, InsecurePlaintext: cfg.InsecurePlaintext}, tel)
	if err != nil {
		return fmt.Errorf("HANGAR_GATEWAY_ADDR: %w", err)
	}
	defer gwConn.Close()
	lsConn, err := dial.Dial(cfg.LogshipAddr, dial.Security{TLS: lsTLS, InsecurePlaintext: cfg.InsecurePlaintext}, tel)
	if err != nil {
		return fmt.Errorf("HANGAR_LOGSHIP_ADDR: %w", err)
	}
	defer lsConn.Close()

	state, err := newStateStore(ctx, cfg.State)
	if err != nil {
		return err
	}
	if state == nil {
		log.Info("no HANGAR_S3_BUCKET: tracked runs that need confirmation will fail")
	}
	exec := execute.New(execute.Config{
		State: state, StateDir: stateDir,
		Runtime: rt, Logs: logsv1.NewLogServiceClient(lsConn),
		Workspace:    workspace.Options{BaseDir: cfg.WorkDir, Owner: cfg.ExecutorID, VCSMappings: cfg.VCSMappings},
		WhitelistEnv: cfg.WhitelistEnv, MaskEnv: cfg.MaskEnv,
		Limits:    supervise.Limits{RunTimeout: cfg.RunTimeout, LogsTimeout: cfg.LogsTimeout},
		StopGrace: cfg.CancelGrace, Tracer: tel.Tracer("hangar/executor"), Propagator: tel.Propagator(), Logger: log,
	})
	w := worker.New(worker.Config{
		ID: cfg.ExecutorID, Slots: cfg.Slots, Metadata: cfg.Metadata, Version: Version,
		Logger: log, Registry: reg, CancelReason: "the executor is shutting down",
		StateFile: filepath.Join(cfg.WorkDir, "hangar-executor-"+cfg.ExecutorID+".leases.json"),
		Orphaned:  exec.CloseOrphanLog,
		Readopt:   exec.Readopt,
		Unavailable: func() string {
			return admission.HostProbe().Reason(cfg.WorkDir, admission.Thresholds{MinFreeDiskBytes: cfg.MinFreeDisk, MinFreeMemoryBytes: cfg.MinFreeMemory})
		},
	}, workv1.NewWorkServiceClient(gwConn), exec)

	// What an earlier life of this executor left and did not re-adopt.
	reap(w.Adopted())

	srv, err := serve.New(serve.Config{ServiceName: "executor", DebugAddr: cfg.DebugAddr}, serve.Deps{Logger: log, Registry: reg, Telemetry: tel})
	if err != nil {
		return err
	}
	log.Info("executor starting", "executor_id", cfg.ExecutorID, "slots", cfg.Slots, "runtime", cfg.Runtime, "gateway", cfg.GatewayAddr)

	// The worker's context ends when the executor is to stop taking work; the
	// runs themselves end by drain completion or cancel.
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	g, gctx := errgroup.WithContext(workCtx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-sig.Drain:
			log.Info("drain requested: finishing running runs, taking no new ones")
			w.Drain()
		case <-w.ExitRequested():
			log.Info("pool cycle: drained and idle, exiting")
			stopWork()
			return nil
		}
		select {
		case <-w.Idle():
		case <-sig.Cancel:
			log.Info("second stop request: cancelling running runs")
			w.CancelAll()
			<-w.Idle()
		}
		// Let the gateway acknowledge the last results before detaching.
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Reported(rctx); err != nil {
			log.Warn("exiting with unacknowledged results", "err", err)
		}
		stopWork()
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// newRuntime returns the configured runtime and the function that removes
// what an earlier life of this executor left on it, except the runs it
// re-adopted.
func newRuntime(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (runner.Runtime, func(keep []string), error) {
	if cfg.Runtime == "kubernetes" {
		return newKubeRuntime(ctx, cfg, reg, log)
	}
	if cfg.Runtime == "process" {
		log.Warn("process runtime: runs execute as local processes with no isolation")
		return processrt.Runtime{SeparateStderr: cfg.SeparateStderr}, func([]string) {}, nil
	}
	guard := mountguard.New(mountguard.KnownSockets(cfg.DockerHost))
	mounts, err := dockerrt.ParseMounts(cfg.ExtraMounts, guard)
	if err != nil {
		return nil, nil, fmt.Errorf("HANGAR_WORKER_EXTRA_MOUNTS: %w", err)
	}
	log.Info("container-engine sockets refused as mount sources", "present", guard.Sockets())
	relay, ioDir, err := installRelay(cfg.Relay, cfg.IODir)
	if err != nil {
		return nil, nil, err
	}
	cli, err := dockerrt.NewClientFromEnv()
	if err != nil {
		return nil, nil, fmt.Errorf("docker: %w", err)
	}
	rt, err := dockerrt.New(cli, dockerrt.Options{
		Network: cfg.WorkerNetwork, CreateNetwork: runNetworkSpec(cfg.WorkerNetwork), AllowHostNetwork: cfg.AllowHostNetwork,
		ExtraMounts: mounts, MountGuard: guard, Runtime: cfg.WorkerRuntime, DockerConfigDir: cfg.DockerConfigDir,
		Memory: cfg.WorkerMemory << 20, NanoCPUs: int64(cfg.WorkerCPUs * 1e9), PidsLimit: cfg.WorkerPids,
		ExecutorID: cfg.ExecutorID, PoolID: poolOf(cfg), Logger: log, RelayPath: relay, IODir: ioDir,
		SeparateStderr: cfg.SeparateStderr,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("docker runtime: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rt.Ping(pctx); err != nil {
		return nil, nil, fmt.Errorf("docker engine not reachable (set DOCKER_HOST, or HANGAR_EXECUTOR_RUNTIME=process): %w", err)
	}
	if err := rt.EnsureNetwork(pctx); err != nil {
		return nil, nil, fmt.Errorf("HANGAR_WORKER_NETWORK: %w", err)
	}
	reap := func(keep []string) {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if ids, err := rt.Reap(rctx, keep...); err != nil {
			log.Warn("reaping containers of an earlier run of this executor failed", "err", err)
		} else if len(ids) > 0 {
			log.Warn("removed containers left by an earlier run of this executor", "run_ids", ids)
		}
		// The first run's network holder (dockerrt.Runtime.Warm), once
		// an earlier life's are reaped.
		if err := rt.Warm(rctx); err != nil {
			log.Warn("network holder not started: the first run sets up its own network", "err", err)
		}
	}
	return rt, reap, nil
}

// installRelay copies the relay binary into the I/O directory, which the
// engine must see at the same path as the executor, and returns its path
// there and the directory of the runs' sockets.
func installRelay(src, ioDir string) (string, string, error) {
	if err := checkStatic(src); err != nil {
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_RELAY: %w", err)
	}
	runs := filepath.Join(ioDir, "runs")
	if err := os.MkdirAll(runs, 0o755); err != nil {
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_IO_DIR: %w", err)
	}
	if len(runs)+len("/0123456789abcdef/p00.sock") > 100 {
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_IO_DIR: %q is too long for unix socket paths (keep it under 70 bytes)", ioDir)
	}
	dst := filepath.Join(ioDir, "hangar-relay")
	in, err := os.Open(src)
	if err != nil {
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_RELAY: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(ioDir, ".hangar-relay-*")
	if err != nil {
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_IO_DIR: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_IO_DIR: copy the relay: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_IO_DIR: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_IO_DIR: %w", err)
	}
	// A rename: containers of re-adopted runs keep the old file mounted.
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", "", fmt.Errorf("HANGAR_EXECUTOR_IO_DIR: %w", err)
	}
	return dst, runs, nil
}

// checkStatic refuses a binary that needs a dynamic loader: it would not run
// in every runner image.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w (build it with `CGO_ENABLED=0 go build ./services/executor/cmd/hangar-relay`)", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}

// newKubeRuntime connects to the API server; its reap function deletes the
// pods an earlier life of this executor left, except those of the runs it
// re-adopted.
func newKubeRuntime(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (runner.Runtime, func(keep []string), error) {
	k := cfg.Kube
	rc, cs, err := kubert.Connect(k.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("HANGAR_KUBECONFIG: %w", err)
	}
	rt, err := kubert.New(kubert.Options{
		Client: cs, Config: rc, Namespace: k.Namespace, ExecutorID: cfg.ExecutorID,
		PullPolicy: corev1.PullPolicy(k.PullPolicy), PullSecrets: k.PullSecrets, ServiceAccount: k.ServiceAccount,
		Memory: cfg.WorkerMemory << 20, MilliCPUs: int64(cfg.WorkerCPUs * 1000), RunTimeout: cfg.RunTimeout,
		PendingTimeout: k.PendingTimeout, OwnerName: k.PodName, OwnerUID: k.PodUID, OwnerNamespace: k.PodNamespace,
		Registry: reg, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := rt.Ping(pctx); err != nil {
		return nil, nil, err
	}
	reap := func(keep []string) {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if ids, err := rt.Reap(rctx, keep...); err != nil {
			log.Warn("reaping pods of an earlier run of this executor failed", "err", err)
		} else if len(ids) > 0 {
			log.Warn("removed pods left by an earlier run of this executor", "run_ids", ids)
		}
	}
	return rt, reap, nil
}

// runNetworkSpec is how the run network is created when it is missing: only
// Hangar's default network is; a network the operator names must exist.
func runNetworkSpec(network string) *dockerrt.NetworkSpec {
	if network != dockerrt.DefaultNetwork {
		return nil
	}
	return &dockerrt.NetworkSpec{Bridge: dockerrt.DefaultBridge}
}

// newStateStore returns the hand-off state store, or nil without a bucket.
func newStateStore(ctx context.Context, c config.StateConfig) (*handoff.Store, error) {
	if c.Bucket == "" {
		return nil, nil
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(c.Region), awsconfig.WithRetryMaxAttempts(3)}
	if c.AccessKeyID != "" && c.SecretKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretKey, c.SessionToken)))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("state bucket: aws config: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
	})
	return handoff.NewStore(client, c.Bucket, c.Prefix, c.MaxBytes), nil
}

// NewLogger returns the service's JSON logger on stderr.
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With("service", "executor")
}

// poolOf is the pool in the executor's certificate, "" without TLS (the
// runtime then owns only objects without a pool label).
func poolOf(cfg *config.Config) string {
	if cfg.PoolTLS == nil {
		return ""
	}
	return cfg.PoolTLS.Identity.Pool
}
