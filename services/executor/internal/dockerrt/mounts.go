package dockerrt

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
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

// dockerSockets returns the paths of the Docker socket; a run must never
// reach the engine that runs it.
func dockerSockets() [2]string {
	return [2]string{"/var/run/docker.sock", "/run/docker.sock"}
}

// ParseMounts parses HANGAR_WORKER_EXTRA_MOUNTS: comma-separated entries of
// "/host:/container", optionally followed by ":ro" or ":rw". Both paths must
// be absolute. Empty entries are ignored. A mount of the Docker socket, as
// source or target, or of a directory holding it (/, /run, /var, /var/run) is
// refused: no Docker socket inside runs. /workspace is reserved for the
// run's workspace volume.
func ParseMounts(s string) ([]Mount, error) {
	var out []Mount
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		m, err := parseMount(entry)
		if err != nil {
			return nil, fmt.Errorf("mount %q: %w", entry, err)
		}
		out = append(out, m)
	}
	return out, nil
}

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
	if exposesDockerSocket(m.Source) {
		return Mount{}, fmt.Errorf("source %s exposes the Docker socket: no Docker socket inside runs", m.Source)
	}
	// Best effort: a symbolic link on this host that resolves to the socket
	// or one of its directories.
	if resolved, err := filepath.EvalSymlinks(m.Source); err == nil && exposesDockerSocket(resolved) {
		return Mount{}, fmt.Errorf("source %s resolves to %s, which exposes the Docker socket: no Docker socket inside runs", m.Source, resolved)
	}
	for _, sock := range dockerSockets() {
		if m.Target == sock {
			return Mount{}, fmt.Errorf("target %s is the Docker socket path: no Docker socket inside runs", m.Target)
		}
	}
	return m, nil
}

// exposesDockerSocket reports whether p is a Docker socket path or one of the
// directories above it.
func exposesDockerSocket(p string) bool {
	for _, sock := range dockerSockets() {
		if p == sock || p == "/" || strings.HasPrefix(sock, p+"/") {
			return true
		}
	}
	return false
}
