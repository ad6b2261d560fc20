// Package dockerrt is the executor's Docker runtime: it runs each phase of a
// run in a fresh container of the run's runner image, all sharing one
// workspace volume, on the host's Docker engine.
//
// Every container and volume it creates carries the labels hangar.managed,
// hangar.run-id and hangar.executor-id (containers also hangar.phase), so an
// executor that restarts can find and remove what a previous incarnation left
// behind (Runtime.Reap).
package dockerrt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/ids"
	"github.com/hangar-dev/hangar/services/executor/internal/mountguard"
	"github.com/hangar-dev/hangar/services/executor/internal/relayrecv"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// Labels of everything the runtime creates.
const (
	LabelManaged    = "hangar.managed"
	LabelRunID      = "hangar.run-id"
	LabelExecutorID = "hangar.executor-id"
	// LabelPoolID is the pool of the executor that created the object
	// (Options.PoolID), absent when it knew none.
	LabelPoolID = "hangar.pool-id"
	LabelPhase  = "hangar.phase"
	// LabelPhaseIndex is the phase's index among the run's selected phases.
	LabelPhaseIndex = "hangar.phase-index"
)

const (
	defaultNetwork   = "bridge"
	defaultPidsLimit = 4096
	// cleanupTimeout bounds the removal of a run's containers and volume,
	// which runs on a fresh context after the run's own has ended.
	cleanupTimeout = 60 * time.Second
)

// Options configure the runtime.
type Options struct {
	// Network is the network mode of the run containers
	// (HANGAR_WORKER_NETWORK): "bridge" (the default), a user-defined
	// network's name, "none", or "host".
	Network string
	// ExtraMounts are bind-mounted into every container of a run
	// (HANGAR_WORKER_EXTRA_MOUNTS, see ParseMounts).
	ExtraMounts []Mount
	// CreateNetwork, when set, makes EnsureNetwork create Network if it does
	// not exist (the executor sets it for DefaultNetwork only: a network the
	// operator names must exist).
	CreateNetwork *NetworkSpec
	// AllowHostNetwork allows a Network whose driver is "host"
	// (HANGAR_WORKER_ALLOW_HOST_NETWORK).
	AllowHostNetwork bool
	// MountGuard checks each extra mount's source, at New and again before
	// every container is created; nil checks against
	// mountguard.KnownSockets("").
	MountGuard *mountguard.Guard
	// Runtime is the OCI runtime of the run containers
	// (HANGAR_WORKER_RUNTIME, e.g. "runsc"); "" uses the engine's default.
	Runtime string
	// DockerConfigDir holds a config.json with the credentials of private
	// registries (HANGAR_DOCKER_CONFIG_DIR): {"auths": {"host:port":
	// {"auth": base64("user:password")}}}. It is read at every pull.
	DockerConfigDir string
	// Memory limits each container's memory, in bytes; 0 is unlimited.
	Memory int64
	// NanoCPUs limits each container's CPU, in 1e-9 CPUs; 0 is unlimited.
	NanoCPUs int64
	// PidsLimit limits the number of processes of each container; 0 means
	// 4096, a negative value means unlimited.
	PidsLimit int64
	// ExecutorID identifies this executor in the labels; required.
	ExecutorID string
	// PoolID is the pool this executor serves (from its certificate); it
	// is a label of everything the runtime creates, and what the runtime
	// treats as its own is what carries its executor id and either this
	// pool or no pool label (created before the label existed, or by a
	// plaintext executor, which knows no pool at start). So the executors
	// of two pools on one engine never reap or adopt each other's runs,
	// even when their executor ids are the same (the host name is the
	// default id). "" (plaintext): only objects without a pool label.
	PoolID string
	// Logger receives the runtime's own diagnostics (never a run's output
	// or environment); nil discards them.
	Logger *slog.Logger
	// RelayPath is the static hangar-relay binary (a path the engine can
	// bind-mount, read-only, into every run container), the containers'
	// entrypoint that relays their output (ADR 0016).
	RelayPath string
	// IODir holds a directory per run with the sockets its relays connect
	// to, bind-mounted into the run's containers: a path the engine sees
	// as the executor does. Unix socket paths are short: keep it under 60
	// bytes.
	IODir string
	// SeparateStderr runs the relay with --separate-stderr: the phase's
	// stderr on a pipe of its own. By default stdout and stderr are one
	// pipe, in the order written, like a terminal (ADR 0020).
	SeparateStderr bool
}

// Runtime runs jobs in Docker containers. It implements runner.Runtime and
// is safe for concurrent use.
type Runtime struct {
	cli   Client
	opts  Options
	guard *mountguard.Guard
	log   *slog.Logger
	// created, when set (by tests), is called with the id of each container
	// after it is created and before it starts.
	created func(id string)
	// hold keeps a network holder started ahead (holder.go).
	hold holders
}

var _ runner.Runtime = (*Runtime)(nil)

// New returns a runtime using cli. It checks the options but does not
// contact the engine (see Ping).
func New(cli Client, opts Options) (*Runtime, error) {
	if cli == nil {
		return nil, errors.New("docker runtime: nil client")
	}
	if opts.ExecutorID == "" {
		return nil, errors.New("docker runtime: empty executor id")
	}
	if opts.Network == "" {
		opts.Network = defaultNetwork
	}
	if opts.PidsLimit == 0 {
		opts.PidsLimit = defaultPidsLimit
	}
	if opts.Memory < 0 || opts.NanoCPUs < 0 {
		return nil, errors.New("docker runtime: negative memory or CPU limit")
	}
	if opts.DockerConfigDir != "" {
		if _, err := loadDockerConfig(opts.DockerConfigDir); err != nil {
			return nil, fmt.Errorf("docker runtime: docker config dir: %w", err)
		}
	}
	guard := opts.MountGuard
	if guard == nil {
		guard = mountguard.New(mountguard.KnownSockets(""))
	}
	opts.ExtraMounts = slices.Clone(opts.ExtraMounts)
	for _, m := range opts.ExtraMounts {
		// Options may be built without ParseMounts: apply its rules.
		spec := m.Source + ":" + m.Target
		if _, err := ParseMounts(spec, guard); err != nil {
			return nil, fmt.Errorf("docker runtime: extra mount: %w", err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{cli: cli, opts: opts, guard: guard, log: log}, nil
}

// Ping checks that the Docker engine answers.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("ping docker engine: %w", err)
	}
	return nil
}

// Open checks the job and returns its session: one container per phase,
// all sharing the run's workspace volume.
func (r *Runtime) Open(job *runner.Job) (runner.Session, error) {
	if !ids.ValidRunID(job.RunID) {
		return nil, fmt.Errorf("invalid run id %q", job.RunID)
	}
	if job.Spec.GetRunnerImage() == "" {
		return nil, errors.New("no runner image")
	}
	workdir, err := workingDir(job.Workspace, job.Spec.GetSource().GetProjectRoot())
	if err != nil {
		return nil, err
	}
	if r.opts.RelayPath == "" || r.opts.IODir == "" {
		return nil, errors.New("docker runtime: no output relay configured (HANGAR_EXECUTOR_RELAY, HANGAR_EXECUTOR_IO_DIR)")
	}
	s := &session{
		r:       r,
		job:     job,
		log:     r.log.With("run_id", job.RunID),
		workdir: workdir,
		volume:  "hangar-ws-" + job.RunID,
		ioDir:   r.runIODir(job.RunID),
	}
	if job.Adopt != nil {
		// Created by the executor process that started the run.
		s.volumeCreated = true
	}
	return s, nil
}

// session is one run's containers and volume.
type session struct {
	r             *Runtime
	job           *runner.Job
	log           *slog.Logger
	workdir       string
	volume        string
	volumeCreated bool
	user          string // the runner image's user
	containers    []string
	last          string // the container of the last phase run
	holder        string // the network holder its phases join, if any
	ioDir         string // the run's relay sockets, on the host
}

// Prepare checks the run network (EnsureNetwork), makes the runner image
// present (pulling it with the configured registry credentials) and creates
// the run's workspace volume. The three are independent and asked of the
// engine at once: a run's start waits for the slowest, not for their sum.
// The first error (network, image, volume, in that order) is returned; a
// volume created meanwhile is removed with the session.
func (s *session) Prepare(ctx context.Context) error {
	if err := os.MkdirAll(s.ioDir, 0o755); err != nil {
		return fmt.Errorf("relay directory: %w", err)
	}
	netErr, volErr := make(chan error, 1), make(chan error, 1)
	go func() {
		err := s.r.EnsureNetwork(ctx)
		if err == nil && s.job.Adopt == nil {
			s.holder = s.r.takeHolder(ctx)
		}
		netErr <- err
	}()
	go func() { volErr <- s.createVolume(ctx) }()
	user, imgErr := ensureImage(ctx, s.r.cli, s.job.Spec.GetRunnerImage(), s.r.opts.DockerConfigDir)
	nerr, verr := <-netErr, <-volErr
	if err := cmp.Or(nerr, imgErr, verr); err != nil {
		return err
	}
	s.user = user
	return nil
}

// RunPhase creates the phase's container (the first one also receives the
// workspace), runs it and waits for it to exit, receiving its output from its
// relay. A re-adopted phase's running container is found by its labels and
// its relay resends what was not stored.
func (s *session) RunPhase(ctx context.Context, i int, p *runv1.Phase, out runner.Output) (runner.Exit, error) {
	ln, err := relayrecv.Listen(filepath.Join(s.ioDir, relaySocket(i)))
	if err != nil {
		return runner.Exit{Code: -1}, err
	}
	defer ln.Close()
	if a := s.job.Adopt; a != nil && i == a.Phase {
		id, err := s.r.runningPhase(ctx, s.job.RunID, i)
		if err != nil {
			return runner.Exit{Code: -1}, err
		}
		s.last = id
		code, wasStopped, err := s.runContainer(ctx, id, p.GetName(), ln, out, a.Stored-a.Base, false)
		return runner.Exit{Code: code, Stopped: wasStopped}, err
	}
	id, err := s.createContainer(ctx, i, p)
	if err != nil {
		return runner.Exit{Code: -1}, err
	}
	s.last = id
	if i == 0 {
		if err := s.copyWorkspace(ctx, id, s.user); err != nil {
			return runner.Exit{Code: -1}, err
		}
	}
	code, wasStopped, err := s.runContainer(ctx, id, p.GetName(), ln, out, 0, true)
	return runner.Exit{Code: code, Stopped: wasStopped}, err
}

// Export reads the workspace volume through the last phase's (exited)
// container.
func (s *session) Export(ctx context.Context, w io.Writer) error {
	if s.last == "" {
		return errors.New("export workspace: no phase ran")
	}
	return s.exportWorkspace(ctx, s.last, w)
}

// Close removes the run's containers, volume and relay directory.
func (s *session) Close() {
	s.cleanup(s.job.StopGrace)
	if err := os.RemoveAll(s.ioDir); err != nil {
		s.log.Warn("remove relay directory", "err", err)
	}
}

// ensureImage pulls image unless the engine has it, and returns the user
// the image runs as.
func ensureImage(ctx context.Context, cli imageClient, image, configDir string) (string, error) {
	res, err := cli.ImageInspect(ctx, image)
	if err == nil {
		return imageUser(res), nil
	}
	if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect image %s: %w", image, err)
	}
	auth, err := registryAuth(configDir, image)
	if err != nil {
		return "", fmt.Errorf("pull image %s: %w", image, err)
	}
	resp, err := cli.ImagePull(ctx, image, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return "", fmt.Errorf("pull image %s: %w", image, err)
	}
	defer resp.Close()
	if err := resp.Wait(ctx); err != nil {
		return "", fmt.Errorf("pull image %s: %w", image, err)
	}
	if res, err = cli.ImageInspect(ctx, image); err != nil {
		return "", fmt.Errorf("inspect image %s after pull: %w", image, err)
	}
	return imageUser(res), nil
}

func imageUser(res client.ImageInspectResult) string {
	if res.Config == nil {
		return ""
	}
	return res.Config.User
}

// createVolume creates the run's workspace volume, replacing a stale one of
// the same name (an earlier attempt of the same run on this host).
func (rn *session) createVolume(ctx context.Context) error {
	cli := rn.r.cli
	if _, err := cli.VolumeRemove(ctx, rn.volume, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove stale workspace volume %s: %w", rn.volume, err)
	}
	if _, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: rn.volume, Labels: rn.r.runLabels(rn.job.RunID)}); err != nil {
		return fmt.Errorf("create workspace volume: %w", err)
	}
	rn.volumeCreated = true
	return nil
}

// createContainer creates the container of phase i.
func (rn *session) createContainer(ctx context.Context, i int, p *runv1.Phase) (string, error) {
	extra, err := rn.r.checkedMounts()
	if err != nil {
		return "", err
	}
	network := rn.r.opts.Network
	if rn.holder != "" {
		network = "container:" + rn.holder
	}
	spec := rn.r.phaseContainer(rn.job, network, rn.volume, rn.workdir, rn.ioDir, i, p, extra)
	res, err := rn.r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: spec.Name, Config: spec.Config, HostConfig: spec.Host})
	if err != nil {
		return "", rn.r.containerError("create container for phase "+p.GetName(), err)
	}
	rn.containers = append(rn.containers, res.ID)
	for _, w := range res.Warnings {
		rn.log.Warn("docker engine warning on container create", "phase", p.GetName(), "warning", w)
	}
	if rn.r.created != nil {
		rn.r.created(res.ID)
	}
	return res.ID, nil
}

// containerError wraps an error of creating or starting a container, naming
// an unavailable container runtime when that is the cause.
func (r *Runtime) containerError(op string, err error) error {
	if r.opts.Runtime != "" && strings.Contains(strings.ToLower(err.Error()), "runtime") {
		return fmt.Errorf("container runtime %q is not available on this host: %s: %w", r.opts.Runtime, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// copyWorkspace fills the volume through the created (not yet started)
// container of the first phase: the job's workspace, or, without one, the
// project root's directories. The engine extracts the archive, so the image
// needs no tar. Everything, /workspace included, belongs to the image's user.
//
// Nothing is copied when there is nothing to copy: an image running as root
// and an empty workspace (a task without source). The fresh volume is then
// already the root-owned, empty /workspace, and the engine creates the
// working directory: one engine call and an archive less before the start.
func (rn *session) copyWorkspace(ctx context.Context, id, user string) error {
	if user == "" && emptyDir(rn.job.Workspace) {
		return nil
	}
	own, err := resolveUser(ctx, rn.r.cli, id, user)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := writeWorkspaceTar(pw, rn.job.Workspace, strings.TrimPrefix(rn.workdir, workspaceDir), own)
		pw.CloseWithError(err)
		done <- err
	}()
	_, err = rn.r.cli.CopyToContainer(ctx, id, client.CopyToContainerOptions{
		DestinationPath: "/",
		Content:         pr,
	})
	pr.CloseWithError(errors.New("copy to container ended"))
	werr := <-done
	if err != nil {
		return fmt.Errorf("copy workspace: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("copy workspace: %w", werr)
	}
	return nil
}

// runContainer starts the container (unless it runs already: a re-adopted
// phase), receives its output from its relay through ln (from offset resume
// of the phase's output) and waits for it to exit. When ctx ends first, it
// stops the container (SIGTERM, the job's StopGrace, SIGKILL), still
// receiving what the phase prints meanwhile, and reports stopped with the
// exit code it got.
func (rn *session) runContainer(ctx context.Context, id, phase string, ln *relayrecv.Listener, out runner.Output, resume uint64, start bool) (code int, wasStopped bool, err error) {
	cli := rn.r.cli
	// The wait outlives ctx: after a stop it still delivers the exit code.
	waitCtx, cancelWait := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWait()
	cond := container.WaitConditionNextExit
	if !start {
		cond = container.WaitConditionNotRunning
	}
	wait := cli.ContainerWait(waitCtx, id, client.ContainerWaitOptions{Condition: cond})

	gone := make(chan struct{})
	type received struct {
		ex  relayrecv.Exit
		err error
	}
	recv := make(chan received, 1)
	go func() {
		ex, err := ln.Receive(gone, relayrecv.Sink{Stdout: out.Stdout, Stderr: out.Stderr, Durable: out.Durable, Base: out.Base, Resume: resume})
		recv <- received{ex, err}
	}()
	defer func() {
		close(gone)
		r := <-recv
		if r.err != nil && err == nil {
			err = fmt.Errorf("output of phase %s: %w", phase, r.err)
		}
	}()

	if start {
		// The start is not abandoned when ctx ends during it: the container
		// could run unobserved. It is stopped below, with its grace period.
		startCtx, cancelStart := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancelStart()
		if _, err := cli.ContainerStart(startCtx, id, client.ContainerStartOptions{}); err != nil {
			return -1, false, rn.r.containerError("start phase "+phase, err)
		}
	}

	select {
	case res := <-wait.Result:
		if res.Error != nil && res.Error.Message != "" {
			return -1, false, fmt.Errorf("wait for phase %s: %s", phase, res.Error.Message)
		}
		return int(res.StatusCode), false, nil
	case err := <-wait.Error:
		return -1, false, fmt.Errorf("wait for phase %s: %w", phase, err)
	case <-ctx.Done():
		return rn.stop(waitCtx, id, phase, wait), true, nil
	}
}

// stop stops a running container and returns its exit code, -1 if unknown.
func (rn *session) stop(ctx context.Context, id, phase string, wait client.ContainerWaitResult) int {
	grace := graceSeconds(rn.job.StopGrace)
	stopCtx, cancel := context.WithTimeout(ctx, time.Duration(grace)*time.Second+cleanupTimeout)
	defer cancel()
	if _, err := rn.r.cli.ContainerStop(stopCtx, id, client.ContainerStopOptions{Timeout: &grace}); err != nil {
		rn.log.Warn("stop phase container", "phase", phase, "err", err)
		return -1
	}
	select {
	case res := <-wait.Result:
		return int(res.StatusCode)
	case err := <-wait.Error:
		rn.log.Warn("wait for stopped phase container", "phase", phase, "err", err)
	case <-stopCtx.Done():
	}
	return -1
}

// cleanup removes the run's containers and volume, on a fresh context: the
// run's own may have ended.
func (rn *session) cleanup(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout+grace)
	defer cancel()
	cli := rn.r.cli
	ids := slices.Clone(rn.containers)
	// Also anything of this run the engine created but whose id never
	// reached us (a create interrupted after the engine acted), and the
	// network holder its containers joined (also one a re-adopted run joined
	// before the executor restarted).
	var holders []string
	if rn.holder != "" {
		holders = append(holders, rn.holder)
	}
	if list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: rn.r.filters(rn.job.RunID)}); err == nil {
		for _, c := range list.Items {
			if rn.r.owns(c.Labels) && !slices.Contains(ids, c.ID) {
				ids = append(ids, c.ID)
			}
		}
		holders = addHolders(holders, list.Items)
	} else {
		rn.log.Warn("list run containers for cleanup", "err", err)
	}
	// The holder after the run's end: removing it tears its network down,
	// the slowest removal, which the run need not wait for.
	rn.r.removeHolders(holders)
	for _, id := range ids {
		if err := removeContainer(ctx, cli, id); err != nil {
			rn.log.Error("remove run container", "container", id, "err", err)
		}
	}
	if rn.volumeCreated {
		if err := removeVolume(ctx, cli, rn.volume); err != nil {
			rn.log.Error("remove workspace volume", "volume", rn.volume, "err", err)
		}
	}
}

func removeContainer(ctx context.Context, cli containerClient, id string) error {
	_, err := cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

func removeVolume(ctx context.Context, cli volumeClient, name string) error {
	_, err := cli.VolumeRemove(ctx, name, client.VolumeRemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}

// graceSeconds rounds a stop grace period up to whole seconds, the unit of
// the engine's stop timeout.
func graceSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(min(math.Ceil(d.Seconds()), math.MaxInt32))
}

// sanitizeName keeps the characters a container name allows.
func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 32 {
		b = b[:32]
	}
	return string(b)
}

// emptyDir reports whether dir is "" or a directory without entries.
func emptyDir(dir string) bool {
	if dir == "" {
		return true
	}
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 0
}
