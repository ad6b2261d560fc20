package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/pki"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/s3server"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/tracefile"
	"github.com/hangar-dev/hangar/platform/telemetry/otlprecv"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	executor "github.com/hangar-dev/hangar/services/executor/service"
	gateway "github.com/hangar-dev/hangar/services/gateway/service"
	logship "github.com/hangar-dev/hangar/services/logship/service"
	policy "github.com/hangar-dev/hangar/services/policy/service"
)

//go:embed demo-run.json
var demoSpec []byte

// demoSecret is the secret value the demo run prints; the stored log must show
// it masked.
const demoSecret = "s3cr3t-demo-token-4f9a2c"

// devBucket holds the logs of the dev stack.
const devBucket = "hangar-logs"

// devGCPercent is the dev stack's GOGC when the environment sets none.
// Every service and the S3 server share this one process and its heap: a
// run printing fast allocates a few bytes per byte printed across them
// (HTTP bodies, gRPC messages) over a live heap of 15-20 MB, so at GOGC=100
// the collector ran every 60-80 ms, 8% of the stack's CPU. 400 lets the
// heap grow to about 100 MB between collections: a fourth of the cycles, 1%
// of the CPU (bench/README.md, 2026-12-07 04:06-04:40 UTC). It is the dev
// stack's only: the services' own binaries keep Go's default, which their
// operators set with GOGC or GOMEMLIMIT.
const devGCPercent = 400

// devGC sets the process's GOGC to devGCPercent unless the environment
// sets GOGC (the runtime has applied it).
func devGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(devGCPercent)
	}
}

// runDev starts a complete pool on this machine, runs the demo and prints its
// masked log, S3 key and trace id.
func runDev(ctx context.Context, e env) error {
	devGC()
	fs := newFlags("dev", e)
	dir := fs.String("dir", "", "where the stack keeps its CA, keys, data and service logs (default: a new temporary directory)")
	keep := fs.Bool("keep", false, "keep the stack up after the demo run, until interrupted")
	rtFlag := fs.String("runtime", "auto", "executor runtime: auto (Docker when reachable, else process), docker or process")
	executors := fs.Int("executors", 1, "number of executors")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *rtFlag != "auto" && *rtFlag != "docker" && *rtFlag != "process" {
		return fmt.Errorf("%w: --runtime must be auto, docker or process", errUsage)
	}
	if *executors < 1 || *executors > 16 {
		return fmt.Errorf("%w: --executors must be between 1 and 16", errUsage)
	}
	out := e.stdout
	say := func(format string, args ...any) { fmt.Fprintf(out, "hangar dev: "+format+"\n", args...) }

	if *dir == "" {
		d, err := os.MkdirTemp("", "hangar-dev-")
		if err != nil {
			return err
		}
		*dir = d
	}
	for _, sub := range []string{"logs", "data"} {
		if err := os.MkdirAll(filepath.Join(*dir, sub), 0o700); err != nil {
			return err
		}
	}
	say("working directory %s (service logs in %s)", *dir, filepath.Join(*dir, "logs"))

	ctx, stop := context.WithCancel(ctx)
	st := &stack{dir: *dir, errs: make(chan error, 8)}
	// Shut down in order: the services first (they flush their traces and
	// logs), then what they use.
	var closers []func()
	defer func() {
		stop()
		st.wait()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	// The control plane: its CA, the broker's certificate, its signing key.
	cpPath := filepath.Join(*dir, "control-plane")
	d, err := cpdir.Open(cpPath)
	if errors.Is(err, cpdir.ErrNotInitialized) {
		d, err = cpdir.Init(cpPath, cpdir.DefaultBrokerHosts())
	}
	if err != nil {
		return err
	}

	brokerTLS, err := d.BrokerTLS()
	if err != nil {
		return err
	}
	b, err := broker.Start(ctx, broker.Config{Addr: "127.0.0.1:0", TLS: brokerTLS, DataDir: filepath.Join(*dir, "data", "broker"), Logger: st.logger("broker")})
	if err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	closers = append(closers, func() { b.Close() })
	brokerURL := "mqtts://" + b.Addr()
	say("embedded MQTT broker (mutual TLS, per-pool ACLs) on %s", brokerURL)

	accessKey, secretKey := randomHex(10), randomHex(20)
	s3, err := s3server.Start(ctx, s3server.Config{Addr: "127.0.0.1:0", AccessKey: accessKey, SecretKey: secretKey, Buckets: []string{devBucket}, Dir: filepath.Join(*dir, "data", "s3")})
	if err != nil {
		return fmt.Errorf("S3 server: %w", err)
	}
	closers = append(closers, func() { s3.Close() })
	say("S3-compatible server on %s (bucket %s)", s3.Endpoint(), devBucket)
	s3cfg := S3Config{Endpoint: s3.Endpoint(), Bucket: devBucket, Region: "us-east-1", AccessKey: accessKey, SecretKey: secretKey, PathStyle: true}
	if err := s3cfg.Save(cpPath); err != nil {
		return err
	}

	// The pool: its key and CSR (as an operator makes them), and its token.
	poolName := "dev-" + randomHex(3)
	key, err := pki.NewRSAKey(keygenBits)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	csr, err := pki.CreateCSR(key, poolName)
	if err != nil {
		return err
	}
	pool, token, err := d.CreatePool(poolName, csr, brokerURL)
	if err != nil {
		return err
	}
	say("pool %s created; its token is in the gateway's HANGAR_TOKEN", pool.Name)

	// The pool-internal CA and one certificate per service (ADR 0008): every
	// gRPC link of the pool is mutual TLS, as in any deployment.
	tlsDir := pki.PoolTLSDir(filepath.Join(*dir, "pool-tls"))
	// Executor ids name the pool: the Docker runtime reaps, at start, every
	// container labelled with its id that it does not re-adopt, so two dev
	// stacks on one engine with the same ids removed each other's runs.
	execIDs := make([]string, *executors)
	for i := range execIDs {
		execIDs[i] = fmt.Sprintf("%s-executor-%d", pool.Name, i+1)
	}
	tlsEnv, err := devPoolTLS(tlsDir, pool.Name, execIDs)
	if err != nil {
		return fmt.Errorf("pool TLS: %w", err)
	}
	say("pool-internal CA and service certificates in %s (mutual TLS between the services)", string(tlsDir))

	traces, err := otlprecv.Start(ctx)
	if err != nil {
		return fmt.Errorf("trace receiver: %w", err)
	}
	closers = append(closers, traces.Close)

	runtime, why := chooseRuntime(ctx, *rtFlag)
	say("executor runtime: %s (%s)", runtime, why)
	image := devRunnerImage
	relay := ""
	if runtime == "docker" {
		fs, from, err := runnerRootfs(ctx, *dir, busyboxPaths(os.Getenv("HANGAR_DEV_BUSYBOX")))
		if err == nil {
			_, err = executor.RunnerImage(ctx, image, fs)
		}
		if err == nil {
			// The executor's output relay, bind-mounted into run containers.
			relay, err = buildRelay(ctx, *dir)
		}
		if err != nil {
			if *rtFlag == "docker" {
				return fmt.Errorf("runner image %s: %w", image, err)
			}
			say("could not build the runner image %s (%v): using the process runtime", image, err)
			runtime = "process"
		} else {
			say("runner image %s ready, built locally from %s", image, from)
		}
	}

	ports, err := freePorts(8 + *executors)
	if err != nil {
		return err
	}
	gwGRPC, gwDebug, polGRPC, polDebug, lsGRPC, lsDebug := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	common := map[string]string{
		"HANGAR_OTLP_ENDPOINT": traces.Addr(), "HANGAR_OTLP_INSECURE": "true", "HANGAR_OTLP_BATCH_TIMEOUT": "200ms",
		"HANGAR_LOG_LEVEL": "info",
	}
	with := func(extras ...map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range common {
			m[k] = v
		}
		for _, extra := range extras {
			for k, v := range extra {
				m[k] = v
			}
		}
		return m
	}

	st.start(ctx, "policy", polDebug, func(ctx context.Context, log *slog.Logger) error {
		return policy.Run(ctx, with(tlsEnv["policy"], map[string]string{"HANGAR_POLICY_GRPC_ADDR": polGRPC, "HANGAR_POLICY_DEBUG_ADDR": polDebug}), log)
	})
	st.start(ctx, "logship", lsDebug, func(ctx context.Context, log *slog.Logger) error {
		return logship.Run(ctx, with(tlsEnv["logship"], map[string]string{
			"HANGAR_LOGSHIP_GRPC_ADDR": lsGRPC, "HANGAR_LOGSHIP_DEBUG_ADDR": lsDebug,
			"HANGAR_S3_ENDPOINT": s3.Endpoint(), "HANGAR_S3_BUCKET": devBucket, "HANGAR_S3_PATH_STYLE": "true", "HANGAR_S3_REGION": "us-east-1",
			"AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey,
			"HANGAR_LOGSHIP_SPOOL_DIR": filepath.Join(*dir, "data", "spool"), "HANGAR_LOGSHIP_CHUNK_INTERVAL": "1s",
		}, passThrough("HANGAR_LOG_MAX_BYTES")), log)
	})
	st.start(ctx, "gateway", gwDebug, func(ctx context.Context, log *slog.Logger) error {
		return gateway.Run(ctx, with(tlsEnv["gateway"], map[string]string{
			"HANGAR_TOKEN": token, "HANGAR_POOL_PRIVATE_KEY": base64.StdEncoding.EncodeToString(keyPEM),
			"HANGAR_POLICY_ADDR": polGRPC, "HANGAR_GATEWAY_GRPC_ADDR": gwGRPC, "HANGAR_GATEWAY_DEBUG_ADDR": gwDebug,
			"HANGAR_GATEWAY_DATA_DIR": filepath.Join(*dir, "data", "gateway"), "HANGAR_WORKER_ID": "dev-gateway",
			"HANGAR_METADATA_stack": "dev",
		}), log)
	})
	for i := range *executors {
		name := fmt.Sprintf("executor-%d", i+1)
		debug := ports[6+i]
		st.start(ctx, name, debug, func(ctx context.Context, log *slog.Logger) error {
			return executor.Run(ctx, with(tlsEnv[execIDs[i]], map[string]string{
				"HANGAR_EXECUTOR_ID": execIDs[i], "HANGAR_EXECUTOR_RUNTIME": runtime, "HANGAR_EXECUTOR_SLOTS": "2",
				"HANGAR_GATEWAY_ADDR": gwGRPC, "HANGAR_LOGSHIP_ADDR": lsGRPC, "HANGAR_EXECUTOR_DEBUG_ADDR": debug,
				"HANGAR_EXECUTOR_WORK_DIR": filepath.Join(*dir, "data"), "HANGAR_RUN_TIMEOUT": "10m", "HANGAR_LOGS_TIMEOUT": "2m",
				"HANGAR_EXECUTOR_RELAY": relay,
				"HANGAR_METADATA_stack": "dev",
				// The state bucket: a tracked run's plan -> confirm -> apply
				// hand-off stores its encrypted workspace there.
				"HANGAR_S3_BUCKET": devBucket, "HANGAR_S3_ENDPOINT": s3.Endpoint(), "HANGAR_S3_PATH_STYLE": "true", "HANGAR_S3_REGION": "us-east-1",
				"AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey,
			}), log)
		})
	}
	if err := st.ready(ctx, 60*time.Second); err != nil {
		return err
	}
	say("policy, logship, gateway and %d executor(s) are ready", *executors)

	// The demo run, submitted exactly as a user would.
	specPath := filepath.Join(*dir, "demo-run.json")
	if err := os.WriteFile(specPath, demoSpec, 0o600); err != nil {
		return err
	}
	say("submitting the demo run (it prints a secret, which the log must show masked)")
	fmt.Fprintln(out)
	var submitOut bytes.Buffer
	runErr := runSubmit(ctx, env{
		args: []string{"--dir", cpPath, "--pool", pool.Name, "--spec", specPath, "--follow", "--logship", lsGRPC, "--timeout", "5m", "--otlp", traces.Addr(),
			"--tls-ca", tlsDir.CAFile(), "--tls-cert", tlsDir.CertFile("operator-dev"), "--tls-key", tlsDir.KeyFile("operator-dev")},
		stdout: io.MultiWriter(out, &submitOut), stderr: e.stderr, terminal: e.terminal,
	})
	fmt.Fprintln(out)
	if runErr != nil {
		return fmt.Errorf("demo run: %w", runErr)
	}
	runID, traceID := parseSubmitLine(submitOut.String())
	logKey := parseLogKey(submitOut.String())

	stored, err := s3cfg.Get(ctx, logKey)
	if err != nil {
		return explainS3(err, s3cfg, logKey, runID)
	}
	if bytes.Contains(stored, []byte(demoSecret)) {
		return fmt.Errorf("the stored log %s contains the secret unmasked", logKey)
	}
	say("stored log s3://%s/%s (%d bytes): the secret is masked", devBucket, logKey, len(stored))
	services := []string{"hangarctl", "hangar-gateway", "hangar-policy", "hangar-executor", "hangar-logship"}
	_, _ = traces.WaitFor(func(s []otlprecv.RecordedSpan) bool {
		return len(missing(services, otlprecv.Services(otlprecv.ByTrace(s, traceID)))) == 0
	}, 10*time.Second)
	trace := tracefile.Filter(traces.Request(), traceID)
	tracePath := tracefile.Path(*dir, runID)
	if err := tracefile.Write(tracePath, trace); err != nil {
		return err
	}
	fmt.Fprintln(out)
	tracefile.Draw(out, traceID, tracefile.Spans(trace), 30)
	fmt.Fprintln(out)
	say("trace kept in %s (OTLP JSON, for any OTLP tool); hangarctl trace --dir %s %s draws it again", tracePath, *dir, runID)
	say("run %s finished", runID)

	if !*keep {
		say("done; stopping the stack (use --keep to keep it up)")
		return nil
	}
	fmt.Fprintf(out, `
The stack stays up until you press Ctrl-C. In another shell:

  hangarctl run submit --dir %[1]s --pool %[2]s --spec %[3]s --follow --logship %[4]s \
      --tls-ca %[11]s --tls-cert %[12]s --tls-key %[13]s
  hangarctl logs --dir %[1]s %[5]s
  hangarctl broker --help        # the broker runs inside this process on %[6]s

Metrics: http://%[7]s/metrics (gateway), http://%[8]s/metrics (logship), http://%[9]s/metrics (policy), %[10]s (executors)
`, cpPath, pool.Name, specPath, lsGRPC, runID, brokerURL, gwDebug, lsDebug, polDebug, executorMetrics(ports[6:6+*executors]),
		tlsDir.CAFile(), tlsDir.CertFile("operator-dev"), tlsDir.KeyFile("operator-dev"))
	select {
	case <-ctx.Done():
	case err := <-st.errs:
		return err
	}
	return nil
}

// stack runs the services of the dev stack in this process.
type stack struct {
	dir    string
	wg     sync.WaitGroup
	errs   chan error
	debugs []string
	files  []*os.File
}

func (s *stack) logger(name string) *slog.Logger {
	f, err := os.OpenFile(filepath.Join(s.dir, "logs", name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return slog.New(slog.DiscardHandler)
	}
	s.files = append(s.files, f)
	return slog.New(slog.NewJSONHandler(f, nil)).With("service", name)
}

func (s *stack) start(ctx context.Context, name, debugAddr string, run func(context.Context, *slog.Logger) error) {
	log := s.logger(name)
	s.debugs = append(s.debugs, debugAddr)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := run(ctx, log); err != nil && ctx.Err() == nil {
			s.errs <- fmt.Errorf("%s stopped: %w (see %s)", name, err, filepath.Join(s.dir, "logs", name+".log"))
		}
	}()
}

// ready waits until every service answers /readyz.
func (s *stack) ready(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for _, addr := range s.debugs {
		for {
			resp, err := client.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case err := <-s.errs:
				return err
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("a service on %s did not become ready within %v (logs in %s)", addr, timeout, filepath.Join(s.dir, "logs"))
			}
		}
	}
	return nil
}

func (s *stack) wait() {
	s.wg.Wait()
	for _, f := range s.files {
		f.Close()
	}
}

// chooseRuntime picks Docker when the engine answers, else the process runtime.
func chooseRuntime(ctx context.Context, flag string) (string, string) {
	switch flag {
	case "docker":
		return "docker", "asked for with --runtime docker"
	case "process":
		return "process", "asked for with --runtime process; runs have no isolation"
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := executor.PingDocker(pctx); err != nil {
		return "process", "the Docker engine is not reachable; runs execute as local processes, with no isolation"
	}
	return "docker", "the Docker engine is reachable"
}

func executorMetrics(addrs []string) string {
	var out []string
	for _, a := range addrs {
		out = append(out, "http://"+a+"/metrics")
	}
	return strings.Join(out, ", ")
}

func freePorts(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

var (
	submitLine = regexp.MustCompile(`run (\S+) submitted to pool \S+ \(trace ([0-9a-f]+)\)`)
	logKeyLine = regexp.MustCompile(`log stored at s3 key (\S+)`)
)

func parseSubmitLine(s string) (runID, traceID string) {
	if m := submitLine.FindStringSubmatch(s); m != nil {
		return m[1], m[2]
	}
	return "", ""
}

func parseLogKey(s string) string {
	if m := logKeyLine.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

func missing(want, have []string) []string {
	var out []string
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			out = append(out, w)
		}
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// devPoolTLS makes (or keeps) the pool-internal CA in dir and a certificate
// for each service, the executors execIDs and the operator "dev", and
// returns each service's HANGAR_TLS_* variables: by role name for the
// services, by id for the executors.
func devPoolTLS(dir pki.PoolTLSDir, poolName string, execIDs []string) (map[string]map[string]string, error) {
	ca, _, err := dir.InitPoolCA(poolName)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	issue := func(key string, id tlsconfig.Identity) error {
		name := pki.FileName(id)
		if _, err := os.Stat(dir.CertFile(name)); err == nil {
			// A kept directory (--dir) of an earlier pool: certificates of
			// this pool are issued afresh.
			if err := os.Remove(dir.CertFile(name)); err != nil {
				return err
			}
		}
		if _, err := dir.Issue(ca, id, []string{"localhost", "127.0.0.1"}); err != nil {
			return err
		}
		out[key] = map[string]string{"HANGAR_TLS_CA": dir.CAFile(), "HANGAR_TLS_CERT": dir.CertFile(name), "HANGAR_TLS_KEY": dir.KeyFile(name)}
		return nil
	}
	for _, role := range []tlsconfig.Role{tlsconfig.RoleGateway, tlsconfig.RolePolicy, tlsconfig.RoleLogship} {
		if err := issue(string(role), tlsconfig.Identity{Pool: poolName, Role: role, ID: string(role)}); err != nil {
			return nil, err
		}
	}
	for _, id := range execIDs {
		if err := issue(id, tlsconfig.Identity{Pool: poolName, Role: tlsconfig.RoleExecutor, ID: id}); err != nil {
			return nil, err
		}
	}
	if err := issue("operator", tlsconfig.Identity{Pool: poolName, Role: tlsconfig.RoleOperator, ID: "dev"}); err != nil {
		return nil, err
	}
	return out, nil
}

// passThrough returns the named variables of hangarctl's own environment that
// are set (e.g. a benchmark raising logship's HANGAR_LOG_MAX_BYTES).
func passThrough(names ...string) map[string]string {
	m := map[string]string{}
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok {
			m[n] = v
		}
	}
	return m
}
