// Package config reads the executor's configuration from its environment,
// strictly: a bad value stops the executor with a message naming the variable.
package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/services/executor/internal/workspace"
)

// Config is the executor's configuration.
type Config struct {
	ExecutorID  string // HANGAR_EXECUTOR_ID, default: the id in the certificate, else the host name
	Slots       int    // HANGAR_EXECUTOR_SLOTS, default: number of CPUs
	Runtime     string // HANGAR_EXECUTOR_RUNTIME: docker (default), process or kubernetes
	GatewayAddr string // HANGAR_GATEWAY_ADDR
	LogshipAddr string // HANGAR_LOGSHIP_ADDR
	DebugAddr   string // HANGAR_EXECUTOR_DEBUG_ADDR
	WorkDir     string // HANGAR_EXECUTOR_WORK_DIR: where workspaces are prepared
	// Relay (HANGAR_EXECUTOR_RELAY) is the static hangar-relay binary;
	// default: hangar-relay beside the executor's binary.
	Relay string
	// IODir (HANGAR_EXECUTOR_IO_DIR, default <work dir>/hangar-io) holds the
	// relay and the runs' relay sockets, bind-mounted into run containers:
	// the engine must see it at the same path.
	IODir    string
	Metadata map[string]string // HANGAR_METADATA_<key>

	DockerConfigDir string // HANGAR_DOCKER_CONFIG_DIR
	WorkerNetwork   string // HANGAR_WORKER_NETWORK, default hangar-runs (created when missing)
	// AllowHostNetwork (HANGAR_WORKER_ALLOW_HOST_NETWORK) is the explicit
	// opt-in that HANGAR_WORKER_NETWORK=host needs.
	AllowHostNetwork bool
	ExtraMounts      string // HANGAR_WORKER_EXTRA_MOUNTS, parsed by the Docker runtime
	// DockerHost is DOCKER_HOST: its unix socket is refused as a mount
	// source like the engine sockets at their usual paths.
	DockerHost    string
	WorkerRuntime string // HANGAR_WORKER_RUNTIME, e.g. runsc
	WorkerMemory  int64  // HANGAR_WORKER_MEMORY_MB, 0 = unlimited
	WorkerCPUs    float64
	WorkerPids    int64 // HANGAR_WORKER_PIDS_LIMIT
	// SeparateStderr (HANGAR_WORKER_SEPARATE_STDERR) gives a phase's
	// stderr a pipe of its own (docker and process runtimes). By default
	// stdout and stderr are one pipe, in write order (ADR 0020).
	SeparateStderr bool

	// Kube configures the kubernetes runtime (HANGAR_KUBE_*).
	Kube KubeConfig

	// WhitelistEnv are NAME=VALUE of the executor's variables passed to runs.
	WhitelistEnv []string
	// MaskEnv are NAME=VALUE of the executor's variables passed to runs and
	// masked in their logs.
	MaskEnv []string

	// MinFreeDisk and MinFreeMemory (bytes) are the admission thresholds:
	// HANGAR_MIN_FREE_DISK_MB (default 1024) in the work dir and
	// HANGAR_MIN_FREE_MEMORY_MB (default 256); 0 turns a check off.
	MinFreeDisk, MinFreeMemory uint64

	RunTimeout  time.Duration // HANGAR_RUN_TIMEOUT, default 70m
	LogsTimeout time.Duration // HANGAR_LOGS_TIMEOUT, default 7m
	CancelGrace time.Duration // HANGAR_CANCEL_GRACE, default 10s

	VCSMappings map[string]string // HANGAR_PRIVATEVCS_MAPPING_NAME_<n> -> _BASE_ENDPOINT_<n>

	// State is where tracked runs waiting for confirmation keep their
	// encrypted workspace (optional: without a bucket such runs fail).
	State StateConfig

	TLSCert, TLSKey, TLSCA string // mTLS towards gateway and logship (HANGAR_TLS_*; all three or none)
	// TLSEnrollCert and TLSEnrollKey are an executor enrollment CA
	// (HANGAR_TLS_ENROLL_CERT, HANGAR_TLS_ENROLL_KEY), instead of
	// HANGAR_TLS_CERT and HANGAR_TLS_KEY, for replicated executors: the
	// executor mints its own certificate at start, for HANGAR_EXECUTOR_ID or
	// the host name.
	TLSEnrollCert, TLSEnrollKey string
	// PoolTLS is the executor's pool certificate loaded from them (role
	// executor, ADR 0008); nil without TLS.
	PoolTLS *tlsconfig.Pool
	// InsecurePlaintext allows plaintext gRPC to a non-loopback gateway or
	// logship (HANGAR_INSECURE_PLAINTEXT).
	InsecurePlaintext bool
	Telemetry         telemetry.Config // HANGAR_OTLP_*
	LogLevel          string
}

// KubeConfig is the kubernetes runtime's part of the configuration.
type KubeConfig struct {
	Kubeconfig     string        // HANGAR_KUBECONFIG: "" = in-cluster (service account), else a kubeconfig file
	Namespace      string        // HANGAR_KUBE_NAMESPACE: default the executor pod's own, else "default"
	PullPolicy     string        // HANGAR_KUBE_IMAGE_PULL_POLICY: IfNotPresent (default), Always, Never
	PullSecrets    []string      // HANGAR_KUBE_IMAGE_PULL_SECRETS: Secret names, comma-separated
	ServiceAccount string        // HANGAR_KUBE_SERVICE_ACCOUNT of the runs' pods (its token is not mounted)
	PendingTimeout time.Duration // HANGAR_KUBE_PENDING_TIMEOUT: longest a run's pod may stay unschedulable, default 10m
	// PodName, PodUID and PodNamespace are the executor's own pod
	// (HANGAR_KUBE_POD_NAME, _UID, _NAMESPACE, from the downward API): it
	// owns its runs' pods when they share its namespace.
	PodName, PodUID, PodNamespace string
}

// inClusterNamespace is where a pod's service account names its namespace.
const inClusterNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// StateConfig is the S3 bucket of hand-off state, configured like logship's
// log bucket (the same variables; the objects are "<prefix>state/<run>.bin").
type StateConfig struct {
	Bucket    string // HANGAR_S3_BUCKET; "" turns hand-off off
	Endpoint  string // HANGAR_S3_ENDPOINT, for S3-compatible servers
	Region    string // HANGAR_S3_REGION, default us-east-1
	PathStyle bool   // HANGAR_S3_PATH_STYLE
	Prefix    string // HANGAR_S3_PREFIX, default "runs/"
	// MaxBytes bounds one stored state, gzipped (HANGAR_STATE_MAX_MB,
	// default 1024); the archive is held in memory while it is encrypted.
	MaxBytes int64
	// AccessKeyID, SecretKey and SessionToken are static credentials when
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set; otherwise the AWS
	// SDK's standard chain applies (profiles, web identity, instance roles).
	AccessKeyID, SecretKey, SessionToken string
}

// Load reads the configuration: lookup and environ are os.LookupEnv and
// os.Environ in main.
func Load(lookup func(string) (string, bool), environ func() []string) (*Config, error) {
	r := envconfig.New(lookup, envconfig.WithEnviron(environ))
	host, _ := os.Hostname()
	c := &Config{
		ExecutorID:        r.String("HANGAR_EXECUTOR_ID", ""),
		Slots:             r.Int("HANGAR_EXECUTOR_SLOTS", runtime.NumCPU(), 1, 1024),
		Runtime:           r.OneOf("HANGAR_EXECUTOR_RUNTIME", "docker", "docker", "process", "kubernetes"),
		GatewayAddr:       r.Addr("HANGAR_GATEWAY_ADDR", "127.0.0.1:7300"),
		LogshipAddr:       r.Addr("HANGAR_LOGSHIP_ADDR", "127.0.0.1:7302"),
		DebugAddr:         r.Addr("HANGAR_EXECUTOR_DEBUG_ADDR", ":9303"),
		WorkDir:           r.ExistingDir("HANGAR_EXECUTOR_WORK_DIR", os.TempDir()),
		Metadata:          r.Prefixed("HANGAR_METADATA_"),
		Relay:             r.String("HANGAR_EXECUTOR_RELAY", ""),
		IODir:             r.String("HANGAR_EXECUTOR_IO_DIR", ""),
		DockerConfigDir:   r.ExistingDir("HANGAR_DOCKER_CONFIG_DIR", ""),
		WorkerNetwork:     r.String("HANGAR_WORKER_NETWORK", "hangar-runs"),
		AllowHostNetwork:  r.Bool("HANGAR_WORKER_ALLOW_HOST_NETWORK", false),
		ExtraMounts:       r.String("HANGAR_WORKER_EXTRA_MOUNTS", ""),
		DockerHost:        r.String("DOCKER_HOST", ""),
		WorkerRuntime:     r.String("HANGAR_WORKER_RUNTIME", ""),
		WorkerMemory:      int64(r.Int("HANGAR_WORKER_MEMORY_MB", 0, 0, 1<<22)),
		WorkerPids:        int64(r.Int("HANGAR_WORKER_PIDS_LIMIT", 4096, 0, 1<<22)),
		SeparateStderr:    r.Bool("HANGAR_WORKER_SEPARATE_STDERR", false),
		RunTimeout:        r.Duration("HANGAR_RUN_TIMEOUT", 70*time.Minute),
		LogsTimeout:       r.Duration("HANGAR_LOGS_TIMEOUT", 7*time.Minute),
		CancelGrace:       r.Duration("HANGAR_CANCEL_GRACE", 10*time.Second),
		TLSCert:           r.String("HANGAR_TLS_CERT", ""),
		TLSKey:            r.String("HANGAR_TLS_KEY", ""),
		TLSCA:             r.String("HANGAR_TLS_CA", ""),
		TLSEnrollCert:     r.String("HANGAR_TLS_ENROLL_CERT", ""),
		TLSEnrollKey:      r.String("HANGAR_TLS_ENROLL_KEY", ""),
		InsecurePlaintext: r.Bool("HANGAR_INSECURE_PLAINTEXT", false),
		Telemetry:         telemetry.ConfigFromEnv(r, "hangar-executor"),
		LogLevel:          r.OneOf("HANGAR_LOG_LEVEL", "info", "debug", "info", "warn", "error"),
	}
	c.State = StateConfig{
		Bucket:       r.String("HANGAR_S3_BUCKET", ""),
		Endpoint:     r.String("HANGAR_S3_ENDPOINT", ""),
		Region:       r.String("HANGAR_S3_REGION", "us-east-1"),
		PathStyle:    r.Bool("HANGAR_S3_PATH_STYLE", false),
		Prefix:       r.String("HANGAR_S3_PREFIX", "runs/"),
		MaxBytes:     int64(r.Int("HANGAR_STATE_MAX_MB", 1024, 1, 1<<20)) << 20,
		AccessKeyID:  r.String("AWS_ACCESS_KEY_ID", ""),
		SecretKey:    r.String("AWS_SECRET_ACCESS_KEY", ""),
		SessionToken: r.String("AWS_SESSION_TOKEN", ""),
	}
	defaultNS := "default"
	if b, err := os.ReadFile(inClusterNamespace); err == nil && strings.TrimSpace(string(b)) != "" {
		defaultNS = strings.TrimSpace(string(b))
	}
	c.Kube = KubeConfig{
		Kubeconfig:     r.String("HANGAR_KUBECONFIG", ""),
		Namespace:      r.String("HANGAR_KUBE_NAMESPACE", defaultNS),
		PullPolicy:     r.OneOf("HANGAR_KUBE_IMAGE_PULL_POLICY", "IfNotPresent", "IfNotPresent", "Always", "Never"),
		PullSecrets:    r.List("HANGAR_KUBE_IMAGE_PULL_SECRETS"),
		ServiceAccount: r.String("HANGAR_KUBE_SERVICE_ACCOUNT", ""),
		PendingTimeout: r.Duration("HANGAR_KUBE_PENDING_TIMEOUT", 10*time.Minute),
		PodName:        r.String("HANGAR_KUBE_POD_NAME", ""),
		PodUID:         r.String("HANGAR_KUBE_POD_UID", ""),
		PodNamespace:   r.String("HANGAR_KUBE_POD_NAMESPACE", ""),
	}
	c.MinFreeDisk = uint64(r.Int("HANGAR_MIN_FREE_DISK_MB", 1024, 0, 1<<30)) << 20
	c.MinFreeMemory = uint64(r.Int("HANGAR_MIN_FREE_MEMORY_MB", 256, 0, 1<<30)) << 20
	cpus := r.Int("HANGAR_WORKER_MILLICPUS", 0, 0, 1<<20)
	c.WorkerCPUs = float64(cpus) / 1000
	whitelist := r.List("HANGAR_WHITELIST_ENVS")
	mask := r.List("HANGAR_MASK_ENVS")
	if err := r.Err(); err != nil {
		return nil, err
	}
	var pool *tlsconfig.Pool
	var perr error
	switch {
	case c.TLSEnrollCert != "" || c.TLSEnrollKey != "":
		if c.TLSCert != "" || c.TLSKey != "" || c.TLSCA == "" || c.TLSEnrollCert == "" || c.TLSEnrollKey == "" {
			return nil, fmt.Errorf("HANGAR_TLS_ENROLL_CERT, HANGAR_TLS_ENROLL_KEY: set both, with HANGAR_TLS_CA, and without HANGAR_TLS_CERT and HANGAR_TLS_KEY")
		}
		id := c.ExecutorID
		if id == "" {
			id = host
		}
		if pool, perr = tlsconfig.EnrollFiles(c.TLSCA, c.TLSEnrollCert, c.TLSEnrollKey, id, tlsconfig.RoleExecutor); perr != nil {
			return nil, fmt.Errorf("HANGAR_TLS_ENROLL_CERT: %w", perr)
		}
	default:
		if pool, perr = tlsconfig.LoadPoolFiles(c.TLSCA, c.TLSCert, c.TLSKey, tlsconfig.RoleExecutor); perr != nil {
			return nil, fmt.Errorf("HANGAR_TLS_CA, HANGAR_TLS_CERT, HANGAR_TLS_KEY: %w", perr)
		}
	}
	c.PoolTLS = pool
	switch {
	case pool != nil && c.ExecutorID == "":
		c.ExecutorID = pool.Identity.ID
	case pool != nil && c.ExecutorID != pool.Identity.ID:
		return nil, fmt.Errorf("HANGAR_EXECUTOR_ID: %q, but the certificate in HANGAR_TLS_CERT is for executor %q (%s): the gateway takes the id from the certificate; unset HANGAR_EXECUTOR_ID or issue a certificate for it",
			c.ExecutorID, pool.Identity.ID, pool.Identity)
	case c.ExecutorID == "":
		c.ExecutorID = host
	}
	if c.ExecutorID == "" {
		return nil, fmt.Errorf("HANGAR_EXECUTOR_ID: required (the host name is unknown)")
	}
	if c.IODir == "" {
		c.IODir = filepath.Join(c.WorkDir, "hangar-io")
	}
	if c.Relay == "" {
		if exe, err := os.Executable(); err == nil {
			c.Relay = filepath.Join(filepath.Dir(exe), "hangar-relay")
		}
	}
	if err := checkWorkerNetwork(c.WorkerNetwork, c.AllowHostNetwork); err != nil {
		return nil, err
	}
	if e := c.State.Endpoint; e != "" {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("HANGAR_S3_ENDPOINT: invalid URL %q (want http(s)://host[:port])", e)
		}
	}
	if p := c.State.Prefix; p != "" && (strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/")) {
		return nil, fmt.Errorf("HANGAR_S3_PREFIX: %q must not start with / and must end with /", p)
	}
	var err error
	if c.WhitelistEnv, err = passEnv("HANGAR_WHITELIST_ENVS", whitelist, lookup); err != nil {
		return nil, err
	}
	if c.MaskEnv, err = passEnv("HANGAR_MASK_ENVS", mask, lookup); err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, kv := range environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if c.VCSMappings, err = workspace.ParseVCSMappings(env); err != nil {
		return nil, err
	}
	return c, nil
}

// passEnv resolves the names listed in variable `list` to NAME=VALUE pairs of the
// executor's own environment. A listed name that is not set is an error: the
// operator meant to pass something.
func passEnv(list string, names []string, lookup func(string) (string, bool)) ([]string, error) {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "HANGAR_TOKEN") || n == "HANGAR_POOL_PRIVATE_KEY" {
			return nil, fmt.Errorf("%s: refusing to pass %s to runs", list, n)
		}
		v, ok := lookup(n)
		if !ok {
			return nil, fmt.Errorf("%s: %s is listed but not set in the executor's environment", list, n)
		}
		out = append(out, n+"="+v)
	}
	return out, nil
}

// checkWorkerNetwork refuses network modes that give a run the host's (or
// another container's) network stack, unless explicitly allowed. The Docker
// runtime checks again by what the named network is (a network id of the
// host network, say).
func checkWorkerNetwork(network string, allowHost bool) error {
	switch {
	case network == "":
		return fmt.Errorf("HANGAR_WORKER_NETWORK: empty (unset it for the default)")
	case network == "host" && !allowHost:
		return fmt.Errorf("HANGAR_WORKER_NETWORK=host gives runs the host's network stack, " +
			"with every service listening on it (gateway, logship, the executor's own ports): " +
			"set HANGAR_WORKER_ALLOW_HOST_NETWORK=true to accept that, or choose another network")
	case strings.HasPrefix(network, "container:"):
		return fmt.Errorf("HANGAR_WORKER_NETWORK=%s: a run may not join another container's network stack", network)
	}
	return nil
}
