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
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/ids"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// Labels of everything the runtime creates.
const (
	LabelManaged    = "hangar.managed"
	LabelRunID      = "hangar.run-id"
	LabelExecutorID = "hangar.executor-id"
	LabelPhase      = "hangar.phase"
)

const (
	defaultNetwork   = "bridge"
	defaultPidsLimit = 4096
	// cleanupTimeout bounds the removal of a run's containers and volume,
	// which runs on a fresh context after the run's own has ended.
	cleanupTimeout = 60 * time.Second
	// streamDrainTimeout bounds the wait for a phase's output stream to
	// close after its container exited.
	streamDrainTimeout = 30 * time.Second
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
	// Logger receives the runtime's own diagnostics (never a run's output
	// or environment); nil discards them.
	Logger *slog.Logger
}

// Runtime runs jobs in Docker containers. It implements runner.Runtime and
// is safe for concurrent use.
type Runtime struct {
	cli  Client
	opts Options
	log  *slog.Logger
	// created, when set (by tests), is called with the id of each container
	// after it is created and before it starts.
	created func(id string)
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
	opts.ExtraMounts = slices.Clone(opts.ExtraMounts)
	for _, m := range opts.ExtraMounts {
		// Options may be built without ParseMounts: apply its rules.
		spec := m.Source + ":" + m.Target
		if _, err := parseMount(spec); err != nil {
			return nil, fmt.Errorf("docker runtime: extra mount %q: %w", spec, err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{cli: cli, opts: opts, log: log}, nil
}

// Ping checks that the Docker engine answers.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("ping docker engine: %w", err)
	}
	return nil
}

// Run runs the job's phases (runner.Selected), one container each, in order,
// then Job.AfterPhases with an export of the workspace volume read through the
// last phase's (exited) container, and removes every container and the volume
// of the run before returning.
func (r *Runtime) Run(ctx context.Context, job *runner.Job) runner.Result {
	if !ids.ValidRunID(job.RunID) {
		return failed(-1, fmt.Sprintf("invalid run id %q", job.RunID))
	}
	phases := runner.Selected(job)
	if len(phases) == 0 {
		return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FINISHED, ExitCode: -1, Reason: "no phase has commands"}
	}
	workdir, err := workingDir(job.Workspace, job.Spec.GetSource().GetProjectRoot())
	if err != nil {
		return failed(-1, err.Error())
	}
	rn := &run{
		r:       r,
		job:     job,
		log:     r.log.With("run_id", job.RunID),
		workdir: workdir,
		volume:  "hangar-ws-" + job.RunID,
		stdout:  orDiscard(job.Stdout),
		stderr:  orDiscard(job.Stderr),
	}
	defer rn.cleanup(job.StopGrace)
	return rn.execute(ctx, phases)
}

// Reap removes every container and volume that this executor's runtime
// created (labels hangar.managed=true and hangar.executor-id=<ExecutorID>)
// and returns the ids of the runs they belonged to, sorted. Call it when no
// run of this executor is in progress, e.g. at start after a crash.
func (r *Runtime) Reap(ctx context.Context) ([]string, error) {
	f := r.filters()
	runs := map[string]bool{}
	var errs []error
	list, err := r.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("reap: list containers: %w", err)
	}
	for _, c := range list.Items {
		runs[c.Labels[LabelRunID]] = true
		if err := removeContainer(ctx, r.cli, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("reap: %w", err))
		}
	}
	vols, err := r.cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		errs = append(errs, fmt.Errorf("reap: list volumes: %w", err))
	} else {
		for _, v := range vols.Items {
			runs[v.Labels[LabelRunID]] = true
			if err := removeVolume(ctx, r.cli, v.Name); err != nil {
				errs = append(errs, fmt.Errorf("reap: %w", err))
			}
		}
	}
	delete(runs, "")
	ids := make([]string, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		r.log.Info("reaped leftovers of earlier runs", "run_ids", ids)
	}
	return ids, errors.Join(errs...)
}

// filters select what this executor created; runID, if given, narrows them
// to one run.
func (r *Runtime) filters(runID ...string) client.Filters {
	f := client.Filters{}
	f.Add("label", LabelManaged+"=true", LabelExecutorID+"="+r.opts.ExecutorID)
	for _, id := range runID {
		f.Add("label", LabelRunID+"="+id)
	}
	return f
}

// run is the state of one Run call.
type run struct {
	r              *Runtime
	job            *runner.Job
	log            *slog.Logger
	workdir        string
	volume         string
	volumeCreated  bool
	containers     []string
	stdout, stderr io.Writer
}

func (rn *run) execute(ctx context.Context, phases []*runv1.Phase) runner.Result {
	r, job := rn.r, rn.job
	image := job.Spec.GetRunnerImage()
	if image == "" {
		return failed(-1, "no runner image")
	}
	user, err := ensureImage(ctx, r.cli, image, r.opts.DockerConfigDir)
	if err != nil {
		if ctx.Err() != nil {
			return stopped(ctx, -1, "while pulling the runner image")
		}
		return failed(-1, err.Error())
	}
	if err := rn.createVolume(ctx); err != nil {
		if ctx.Err() != nil {
			return stopped(ctx, -1, "while creating the workspace")
		}
		return failed(-1, err.Error())
	}
	exit := -1
	var last string
	for i, p := range phases {
		if ctx.Err() != nil {
			return stopped(ctx, exit, "before phase "+p.GetName())
		}
		if job.OnPhase != nil {
			job.OnPhase(p.GetName())
		}
		id, err := rn.createContainer(ctx, i, p)
		if err != nil {
			if ctx.Err() != nil {
				return stopped(ctx, exit, "in phase "+p.GetName())
			}
			return failed(exit, err.Error())
		}
		last = id
		if i == 0 {
			if err := rn.copyWorkspace(ctx, id, user); err != nil {
				if ctx.Err() != nil {
					return stopped(ctx, exit, "while copying the workspace")
				}
				return failed(exit, err.Error())
			}
		}
		code, wasStopped, err := rn.runContainer(ctx, id, p.GetName())
		switch {
		case wasStopped:
			return stopped(ctx, code, "in phase "+p.GetName())
		case err != nil:
			if ctx.Err() != nil {
				return stopped(ctx, exit, "in phase "+p.GetName())
			}
			return failed(exit, err.Error())
		}
		exit = code
		if code != 0 {
			return failed(code, fmt.Sprintf("phase %s exited with code %d", p.GetName(), code))
		}
	}
	if job.AfterPhases != nil {
		export := func(w io.Writer) error { return rn.exportWorkspace(ctx, last, w) }
		if err := job.AfterPhases(ctx, export); err != nil {
			if ctx.Err() != nil {
				return stopped(ctx, exit, "after the last phase")
			}
			return failed(exit, err.Error())
		}
	}
	return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FINISHED, ExitCode: 0}
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

func (rn *run) labels() map[string]string {
	return map[string]string{
		LabelManaged:    "true",
		LabelRunID:      rn.job.RunID,
		LabelExecutorID: rn.r.opts.ExecutorID,
	}
}

// createVolume creates the run's workspace volume, replacing a stale one of
// the same name (an earlier attempt of the same run on this host).
func (rn *run) createVolume(ctx context.Context) error {
	cli := rn.r.cli
	if _, err := cli.VolumeRemove(ctx, rn.volume, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove stale workspace volume %s: %w", rn.volume, err)
	}
	if _, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: rn.volume, Labels: rn.labels()}); err != nil {
		return fmt.Errorf("create workspace volume: %w", err)
	}
	rn.volumeCreated = true
	return nil
}

// createContainer creates the container of phase i.
func (rn *run) createContainer(ctx context.Context, i int, p *runv1.Phase) (string, error) {
	r, job := rn.r, rn.job
	labels := rn.labels()
	labels[LabelPhase] = p.GetName()
	stopTimeout := graceSeconds(job.StopGrace)
	mounts := []mount.Mount{{
		Type:   mount.TypeVolume,
		Source: rn.volume,
		Target: workspaceDir,
		// The volume holds the job's workspace only, not what the image
		// has at /workspace.
		VolumeOptions: &mount.VolumeOptions{NoCopy: true},
	}}
	for _, m := range r.opts.ExtraMounts {
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	var pids *int64
	if r.opts.PidsLimit > 0 {
		pids = &r.opts.PidsLimit
	}
	useInit := true
	res, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: fmt.Sprintf("hangar-%s-%d-%s", job.RunID, i, sanitizeName(p.GetName())),
		Config: &container.Config{
			Image: job.Spec.GetRunnerImage(),
			// An empty, non-nil entrypoint clears the image's, so that the
			// phase runs under /bin/sh whatever the image's ENTRYPOINT.
			Entrypoint:   []string{},
			Cmd:          []string{"/bin/sh", "-c", runner.PhaseScript(p)},
			WorkingDir:   rn.workdir,
			Env:          slices.Clone(job.Env),
			Labels:       labels,
			AttachStdout: true,
			AttachStderr: true,
			StopTimeout:  &stopTimeout,
		},
		HostConfig: rn.r.hostConfig(mounts, pids, &useInit),
	})
	if err != nil {
		return "", rn.r.containerError("create container for phase "+p.GetName(), err)
	}
	rn.containers = append(rn.containers, res.ID)
	for _, w := range res.Warnings {
		rn.log.Warn("docker engine warning on container create", "phase", p.GetName(), "warning", w)
	}
	if r.created != nil {
		r.created(res.ID)
	}
	return res.ID, nil
}

// hostConfig is the security-relevant part of every run container:
//   - not privileged, no new privileges (setuid binaries cannot raise them),
//     the engine's default seccomp and AppArmor profiles;
//   - all capabilities dropped, then only those a shell job commonly needs
//     added back: CHOWN, DAC_OVERRIDE, FOWNER, FSETID (file ownership and
//     modes, e.g. package managers and tar extraction), SETUID, SETGID
//     (switching users, e.g. su/gosu in runner images), KILL (signalling its
//     own processes) and NET_BIND_SERVICE. Docker's default set also has
//     MKNOD, NET_RAW, SYS_CHROOT, SETPCAP, SETFCAP and AUDIT_WRITE; they
//     are left out (NET_RAW allows spoofing on the network, MKNOD device
//     nodes, SETFCAP/SETPCAP capability games);
//   - a private IPC namespace, an init process (docker-init) as PID 1 that
//     forwards the stop signal and reaps zombies, a PID limit;
//   - logging driver "none": the output goes to the executor through the
//     attach stream only and is never written unmasked to the host's disk.
func (r *Runtime) hostConfig(mounts []mount.Mount, pids *int64, init *bool) *container.HostConfig {
	return &container.HostConfig{
		NetworkMode: container.NetworkMode(r.opts.Network),
		Runtime:     r.opts.Runtime,
		Mounts:      mounts,
		Privileged:  false,
		CapDrop:     []string{"ALL"},
		CapAdd:      runCapabilities(),
		SecurityOpt: []string{"no-new-privileges"},
		IpcMode:     container.IPCModePrivate,
		Init:        init,
		LogConfig:   container.LogConfig{Type: "none"},
		Resources: container.Resources{
			Memory:    r.opts.Memory,
			NanoCPUs:  r.opts.NanoCPUs,
			PidsLimit: pids,
		},
	}
}

// runCapabilities are the capabilities a run container keeps (see
// hostConfig).
func runCapabilities() []string {
	return []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "KILL", "NET_BIND_SERVICE"}
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
func (rn *run) copyWorkspace(ctx context.Context, id, user string) error {
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

// runContainer attaches to the container, starts it and waits for it to
// exit. When ctx ends first, it stops the container (SIGTERM, the job's
// StopGrace, SIGKILL), and reports stopped with the exit code it got.
func (rn *run) runContainer(ctx context.Context, id, phase string) (code int, wasStopped bool, err error) {
	cli := rn.r.cli
	att, err := cli.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return -1, false, fmt.Errorf("attach to phase %s: %w", phase, err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(rn.stdout, rn.stderr, att.Reader)
		copied <- err
	}()
	streamDone := false
	defer func() {
		att.Close()
		if !streamDone {
			<-copied
		}
	}()

	// The wait outlives ctx: after a stop it still delivers the exit code.
	waitCtx, cancelWait := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWait()
	wait := cli.ContainerWait(waitCtx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})

	// The start is not abandoned when ctx ends during it: the container
	// could run unobserved. It is stopped below, with its grace period.
	startCtx, cancelStart := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancelStart()
	if _, err := cli.ContainerStart(startCtx, id, client.ContainerStartOptions{}); err != nil {
		return -1, false, rn.r.containerError("start phase "+phase, err)
	}

	select {
	case res := <-wait.Result:
		if res.Error != nil && res.Error.Message != "" {
			return -1, false, fmt.Errorf("wait for phase %s: %s", phase, res.Error.Message)
		}
		code = int(res.StatusCode)
	case err := <-wait.Error:
		return -1, false, fmt.Errorf("wait for phase %s: %w", phase, err)
	case <-ctx.Done():
		return rn.stop(waitCtx, id, phase, wait), true, nil
	}
	// The container has exited: the engine closes the stream once the
	// remaining output is sent. The bound only guards against an engine
	// that never closes it.
	drain := time.NewTimer(streamDrainTimeout)
	defer drain.Stop()
	select {
	case err := <-copied:
		streamDone = true
		if err != nil {
			rn.log.Warn("output stream of a phase ended with an error", "phase", phase, "err", err)
		}
	case <-drain.C:
		rn.log.Warn("output stream of a phase still open after the container exited", "phase", phase)
	case <-ctx.Done():
	}
	return code, false, nil
}

// stop stops a running container and returns its exit code, -1 if unknown.
func (rn *run) stop(ctx context.Context, id, phase string, wait client.ContainerWaitResult) int {
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
func (rn *run) cleanup(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout+grace)
	defer cancel()
	cli := rn.r.cli
	ids := slices.Clone(rn.containers)
	// Also anything of this run the engine created but whose id never
	// reached us (a create interrupted after the engine acted).
	if list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: rn.r.filters(rn.job.RunID)}); err == nil {
		for _, c := range list.Items {
			if !slices.Contains(ids, c.ID) {
				ids = append(ids, c.ID)
			}
		}
	} else {
		rn.log.Warn("list run containers for cleanup", "err", err)
	}
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

func failed(exit int, reason string) runner.Result {
	return runner.Result{Outcome: eventv1.Outcome_OUTCOME_FAILED, ExitCode: exit, Reason: reason}
}

// stopped is the result of a run whose context ended; Supervise decides the
// outcome from the context's cause.
func stopped(ctx context.Context, exit int, where string) runner.Result {
	return runner.Result{ExitCode: exit, Reason: fmt.Sprintf("run stopped %s: %v", where, context.Cause(ctx))}
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

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
