// Package mountguard decides whether a host path may be bind-mounted into a
// run container. It judges a path by what it IS on this host, not by how it
// is spelled: symbolic links are resolved, and the result is compared by
// device and inode with every container-engine socket the executor knows of,
// every directory above one, the host's root and the kernel's pseudo
// filesystems (/proc, /sys, /dev). A hard link to a socket, a bind-mounted
// alias of /run, "/./" or a symlink to /var/run are therefore all caught.
//
// What it cannot see: it looks at the executor's own mount namespace. When
// the executor runs in a container, the paths it checks are its container's,
// while the engine resolves mount sources on its host; see docs/SECURITY.md.
package mountguard

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// EngineSocket is a container engine's API socket.
type EngineSocket struct {
	Engine string // e.g. "Docker", "containerd"
	Path   string // absolute path; may hold a glob pattern (filepath.Match)
}

// KnownSockets are the sockets of the container engines the executor knows
// of, at their usual paths; dockerHost is DOCKER_HOST ("" when unset), whose
// socket is added when it is a unix:// address.
func KnownSockets(dockerHost string) []EngineSocket {
	s := []EngineSocket{
		{"Docker", "/var/run/docker.sock"},
		{"Docker", "/run/docker.sock"},
		{"Docker (rootless)", "/run/user/*/docker.sock"},
		{"containerd", "/run/containerd/containerd.sock"},
		{"containerd", "/run/containerd/containerd.sock.ttrpc"},
		{"containerd (Docker's)", "/run/docker/containerd/containerd.sock"},
		{"containerd (k3s)", "/run/k3s/containerd/containerd.sock"},
		{"Podman", "/run/podman/podman.sock"},
		{"Podman (rootless)", "/run/user/*/podman/podman.sock"},
		{"CRI-O", "/var/run/crio/crio.sock"},
		{"CRI-O", "/run/crio/crio.sock"},
		{"cri-dockerd", "/run/cri-dockerd.sock"},
		{"BuildKit", "/run/buildkit/buildkitd.sock"},
		{"BuildKit (rootless)", "/run/user/*/buildkit/buildkitd.sock"},
	}
	if p, ok := unixSocketPath(dockerHost); ok {
		s = append(s, EngineSocket{"Docker (DOCKER_HOST)", p})
	}
	return s
}

// unixSocketPath returns the path of a unix:// DOCKER_HOST.
func unixSocketPath(dockerHost string) (string, bool) {
	if !strings.HasPrefix(dockerHost, "unix://") {
		return "", false
	}
	u, err := url.Parse(dockerHost)
	if err != nil || u.Path == "" || !filepath.IsAbs(u.Path) {
		return "", false
	}
	return u.Path, true
}

// specialRoots are refused together with everything on their filesystems.
var specialRoots = []string{"/proc", "/sys", "/sys/fs/cgroup", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"}

// Guard checks mount sources. It holds no state about the host: every Check
// looks again, so that a check just before a container is created sees the
// host as it is then. A Guard is safe for concurrent use.
type Guard struct {
	sockets []EngineSocket
}

// New returns a guard refusing the given engine sockets (see KnownSockets)
// and the host's root and pseudo filesystems.
func New(sockets []EngineSocket) *Guard {
	return &Guard{sockets: append([]EngineSocket(nil), sockets...)}
}

// devIno identifies a file on this host.
type devIno struct{ dev, ino uint64 }

func identify(p string) (devIno, fs.FileInfo, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return devIno{}, nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return devIno{}, nil, fmt.Errorf("stat %s: no device and inode on this platform", p)
	}
	return devIno{uint64(st.Dev), uint64(st.Ino)}, fi, nil //nolint:unconvert // Dev is not uint64 everywhere
}

// forbidden maps what must not be mounted to why.
type forbidden struct {
	files map[devIno]string // exact files and directories
	devs  map[uint64]string // whole filesystems
}

// scan looks at the host now.
func (g *Guard) scan() forbidden {
	f := forbidden{files: map[devIno]string{}, devs: map[uint64]string{}}
	if id, _, err := identify("/"); err == nil {
		f.files[id] = "the host's root directory"
	}
	for _, r := range specialRoots {
		if id, _, err := identify(r); err == nil {
			f.devs[id.dev] = r + " (a kernel filesystem)"
			f.files[id] = r + " (a kernel filesystem)"
		}
	}
	for _, s := range g.sockets {
		paths := []string{s.Path}
		if strings.ContainsAny(s.Path, "*?[") {
			paths, _ = filepath.Glob(s.Path)
		}
		for _, p := range paths {
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				continue // no such socket on this host
			}
			why := fmt.Sprintf("the %s socket %s", s.Engine, p)
			id, fi, err := identify(real)
			if err != nil || fi.Mode().Type() != fs.ModeSocket {
				continue
			}
			if _, dup := f.files[id]; !dup {
				f.files[id] = why
			}
			// Every directory above the socket exposes it.
			for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
				if id, _, err := identify(dir); err == nil {
					if _, dup := f.files[id]; !dup {
						f.files[id] = fmt.Sprintf("%s, which holds %s", dir, why)
					}
				}
				if dir == "/" {
					break
				}
			}
		}
	}
	return f
}

// Sockets returns the engine sockets present on this host now, sorted, for
// the executor's start-up log.
func (g *Guard) Sockets() []string {
	var out []string
	for _, s := range g.sockets {
		paths := []string{s.Path}
		if strings.ContainsAny(s.Path, "*?[") {
			paths, _ = filepath.Glob(s.Path)
		}
		for _, p := range paths {
			if fi, err := os.Stat(p); err == nil && fi.Mode().Type() == fs.ModeSocket {
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ErrRefused is wrapped by every refusal of Check.
var ErrRefused = errors.New("refused: no container engine, host root or kernel filesystem inside runs")

// Check decides whether source may be bind-mounted into a run container. It
// returns the path to give the engine (source with every symbolic link
// resolved, so that a link changed after the check does not redirect the
// mount), or an error wrapping ErrRefused that says what source exposes, or
// another error when source cannot be examined (it must exist on this host).
func (g *Guard) Check(source string) (string, error) {
	if !filepath.IsAbs(source) {
		return "", fmt.Errorf("source %q is not an absolute path", source)
	}
	// As spelled, first: some of /proc cannot even be resolved.
	if r, ok := underSpecialRoot(filepath.Clean(source)); ok {
		return "", fmt.Errorf("source %s is under %s (a kernel filesystem): %w", source, r, ErrRefused)
	}
	real, err := filepath.EvalSymlinks(source)
	if err != nil {
		return "", fmt.Errorf("source %s cannot be examined on this host (it must exist): %w", source, err)
	}
	id, fi, err := identify(real)
	if err != nil {
		return "", fmt.Errorf("source %s: %w", source, err)
	}
	alias := ""
	if real != filepath.Clean(source) {
		alias = " (resolves to " + real + ")"
	}
	f := g.scan()
	if why, ok := f.files[id]; ok {
		return "", fmt.Errorf("source %s%s is %s: %w", source, alias, why, ErrRefused)
	}
	if why, ok := f.devs[id.dev]; ok {
		return "", fmt.Errorf("source %s%s is on %s: %w", source, alias, why, ErrRefused)
	}
	if r, ok := underSpecialRoot(real); ok {
		return "", fmt.Errorf("source %s%s is under %s (a kernel filesystem): %w", source, alias, r, ErrRefused)
	}
	switch t := fi.Mode().Type(); {
	case t&fs.ModeDevice != 0:
		return "", fmt.Errorf("source %s%s is a device node: %w", source, alias, ErrRefused)
	case t == fs.ModeDir:
		if p, why, found := findSocket(real, f); found {
			return "", fmt.Errorf("source %s%s holds %s, a hard link to %s: %w", source, alias, p, why, ErrRefused)
		}
	}
	return real, nil
}

// underSpecialRoot reports whether the clean path p is one of specialRoots or
// below one.
func underSpecialRoot(p string) (string, bool) {
	for _, r := range specialRoots {
		if p == r || strings.HasPrefix(p, r+"/") {
			return r, true
		}
	}
	return "", false
}

// MaxScan bounds the entries Check reads in a directory source looking for a
// hard link to an engine socket; beyond it, the rest is not examined.
const MaxScan = 20000

// findSocket walks dir (at most MaxScan entries) for a socket that is one of
// f's files: a hard link to an engine socket, placed anywhere in the tree.
// Symbolic links inside dir are not followed: in a container they resolve
// in the container's file system, not the host's.
func findSocket(dir string, f forbidden) (string, string, bool) {
	n := 0
	var hitPath, hitWhy string
	stop := errors.New("stop")
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if n++; n > MaxScan {
			return stop
		}
		if err != nil || d.Type() != fs.ModeSocket {
			return nil //nolint:nilerr // an unreadable entry is not a socket we can see
		}
		if id, _, err := identify(p); err == nil {
			if why, ok := f.files[id]; ok {
				hitPath, hitWhy = p, why
				return stop
			}
		}
		return nil
	})
	return hitPath, hitWhy, hitPath != ""
}
