package dockerrt

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// Where the relay and the run's socket directory are in a run container.
const (
	relayTarget = "/.hangar/relay"
	relayIODir  = "/.hangar/io"
)

// relaySocket is the name of phase i's relay socket.
func relaySocket(i int) string { return "p" + strconv.Itoa(i) + ".sock" }

// runIODir is the host directory of a run's relay sockets: short, as unix
// socket paths must be, and distinct per executor and run.
func (r *Runtime) runIODir(runID string) string {
	sum := sha256.Sum256([]byte(r.opts.ExecutorID + "\x00" + runID))
	return filepath.Join(r.opts.IODir, hex.EncodeToString(sum[:8]))
}

// phaseSpec is what the engine is asked to create for one phase of a run: a
// pure translation of the job and the runtime's options, with no engine call.
type phaseSpec struct {
	Name   string
	Config *container.Config
	Host   *container.HostConfig
}

// runLabels are the labels of everything created for a run.
func (r *Runtime) runLabels(runID string) map[string]string {
	l := map[string]string{
		LabelManaged:    "true",
		LabelRunID:      runID,
		LabelExecutorID: r.opts.ExecutorID,
	}
	if r.opts.PoolID != "" {
		l[LabelPoolID] = r.opts.PoolID
	}
	return l
}

// phaseContainer translates phase i of job into its container, on network
// (the run network, or container:<holder> to join a network holder's): the runner
// image with its entrypoint cleared, the phase script under /bin/sh -c, the
// working directory workdir, the job's environment, the run's labels and the
// phase's, the workspace volume at /workspace and the extra mounts (as
// checked by checkedMounts), the stop
// grace period, and the security settings of hostConfig.
func (r *Runtime) phaseContainer(job *runner.Job, network, volume, workdir, ioDir string, i int, p *runv1.Phase, extra []mount.Mount) phaseSpec {
	labels := r.runLabels(job.RunID)
	labels[LabelPhase] = p.GetName()
	labels[LabelPhaseIndex] = strconv.Itoa(i)
	stopTimeout := graceSeconds(job.StopGrace)
	mounts := append([]mount.Mount{{
		Type:   mount.TypeVolume,
		Source: volume,
		Target: workspaceDir,
		// The volume holds the job's workspace only, not what the image
		// has at /workspace.
		VolumeOptions: &mount.VolumeOptions{NoCopy: true},
	}, {
		Type: mount.TypeBind, Source: r.opts.RelayPath, Target: relayTarget, ReadOnly: true,
	}, {
		// Only the run's sockets: no output is ever written there.
		Type: mount.TypeBind, Source: ioDir, Target: relayIODir,
	}}, extra...)
	var pids *int64
	if r.opts.PidsLimit > 0 {
		pids = &r.opts.PidsLimit
	}
	return phaseSpec{
		Name: fmt.Sprintf("hangar-%s-%d-%s", job.RunID, i, sanitizeName(p.GetName())),
		Config: &container.Config{
			Image: job.Spec.GetRunnerImage(),
			// The relay replaces the image's entrypoint: the phase runs
			// under /bin/sh whatever the image's ENTRYPOINT, its output
			// on the relay's pipes (ADR 0016); nothing is attached. The
			// relay is also the container's init (PID 1).
			Entrypoint:  r.relayEntrypoint(i),
			Cmd:         []string{"/bin/sh", "-c", runner.PhaseScript(p)},
			WorkingDir:  workdir,
			Env:         slices.Clone(job.Env),
			Labels:      labels,
			StopTimeout: &stopTimeout,
		},
		Host: r.hostConfig(network, mounts, pids),
	}
}

// relayEntrypoint is the entrypoint of phase i's container: the relay, with
// --separate-stderr when so configured, and the phase's socket.
func (r *Runtime) relayEntrypoint(i int) []string {
	ep := []string{relayTarget}
	if r.opts.SeparateStderr {
		ep = append(ep, "--separate-stderr")
	}
	return append(ep, relayIODir+"/"+relaySocket(i))
}

// hostConfig is the security-relevant part of every run container (and of a
// network holder, holder.go), on network: the run network, or
// container:<holder> to join the namespace of the run's holder:
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
//   - a private IPC namespace and a PID limit;
//   - no engine init (docker-init): the relay, the entrypoint, is PID 1
//     and does its work (package relay, Shim.Init): it passes the stop
//     signal on to the phase's process group, reaps every zombie (each
//     would hold a PID of the limit), exits with the phase's code
//     (128+signal when killed) as soon as the phase has exited, and the
//     kernel then kills whatever the phase left behind. docker-init
//     would be a second process and a bind mount at each start (ADR 0016);
//   - logging driver "none": the output goes to the executor through the
//     relay's socket only and is never written unmasked to the host's disk.
func (r *Runtime) hostConfig(network string, mounts []mount.Mount, pids *int64) *container.HostConfig {
	return &container.HostConfig{
		NetworkMode: container.NetworkMode(network),
		Runtime:     r.opts.Runtime,
		Mounts:      mounts,
		Privileged:  false,
		CapDrop:     []string{"ALL"},
		CapAdd:      runCapabilities(),
		SecurityOpt: []string{"no-new-privileges"},
		IpcMode:     container.IPCModePrivate,
		// Not the engine's default either (dockerd's "init" option).
		Init:      new(false),
		LogConfig: container.LogConfig{Type: "none"},
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
