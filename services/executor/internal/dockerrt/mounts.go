package dockerrt

import (
	"fmt"
	"path"
	"strings"

	"github.com/moby/moby/api/types/mount"

	"github.com/hangar-dev/hangar/services/executor/internal/mountguard"
)

// Mount is a host directory or file bind-mounted into every container of a
// run (HANGAR_WORKER_EXTRA_MOUNTS).
type Mount struct {
	// Source is the absolute path on the Docker host.
	Source string
	// Target is the absolute path inside the container.
	Target string
	// ReadOnly mounts the source read-only.
	ReadOnly bool
}

// dockerSockets returns the paths of the Docker socket: a run's mount must
// not shadow them with something that looks like an engine.
func dockerSockets() [2]string {
	return [2]string{"/var/run/docker.sock", "/run/docker.sock"}
}

// ParseMounts parses HANGAR_WORKER_EXTRA_MOUNTS: comma-separated entries of
// "/host:/container", optionally followed by ":ro" or ":rw". Both paths must
// be absolute. Empty entries are ignored. /workspace is reserved for the
// run's workspace volume, and a target may not be a Docker socket path.
//
// Each source must exist on this host and pass guard (mountguard.Guard.Check):
// no container-engine socket, no directory holding one, no host root, /proc,
// /sys or /dev, judged by device and inode after resolving symbolic links.
// The returned sources are the resolved paths.
func ParseMounts(s string, guard *mountguard.Guard) ([]Mount, error) {
	var out []Mount
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		m, err := parseMount(entry)
		if err == nil {
			m.Source, err = guard.Check(m.Source)
		}
		if err != nil {
			return nil, fmt.Errorf("mount %q: %w", entry, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// parseMount checks the syntax of one entry and its target.
func parseMount(entry string) (Mount, error) {
	parts := strings.Split(entry, ":")
	var m Mount
	switch len(parts) {
	case 2:
	case 3:
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return Mount{}, fmt.Errorf("unknown mode %q, want \"ro\" or \"rw\"", parts[2])
		}
	default:
		return Mount{}, fmt.Errorf("want /host:/container[:ro]")
	}
	if !path.IsAbs(parts[0]) {
		return Mount{}, fmt.Errorf("source %q is not an absolute path", parts[0])
	}
	if !path.IsAbs(parts[1]) {
		return Mount{}, fmt.Errorf("target %q is not an absolute path", parts[1])
	}
	m.Source = path.Clean(parts[0])
	m.Target = path.Clean(parts[1])
	if m.Target == "/" {
		return Mount{}, fmt.Errorf("target must not be /")
	}
	if m.Target == workspaceDir {
		return Mount{}, fmt.Errorf("target %s is reserved for the run's workspace", workspaceDir)
	}
	for _, sock := range dockerSockets() {
		if m.Target == sock {
			return Mount{}, fmt.Errorf("target %s is the Docker socket path: no Docker socket inside runs", m.Target)
		}
	}
	return m, nil
}

// checkedMounts checks the extra mounts against the host as it is now, just
// before a container is created (the host may have changed since the
// executor started), and returns them with their sources resolved.
func (r *Runtime) checkedMounts() ([]mount.Mount, error) {
	out := make([]mount.Mount, 0, len(r.opts.ExtraMounts))
	for _, m := range r.opts.ExtraMounts {
		src, err := r.guard.Check(m.Source)
		if err != nil {
			return nil, fmt.Errorf("extra mount %s:%s (HANGAR_WORKER_EXTRA_MOUNTS): %w", m.Source, m.Target, err)
		}
		out = append(out, mount.Mount{Type: mount.TypeBind, Source: src, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	return out, nil
}
