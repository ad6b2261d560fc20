package mountguard

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listenUnix creates a real unix socket at p (an engine's API socket, for the
// guard) and closes it at the end of the test.
func listenUnix(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

func TestCheck(t *testing.T) {
	t.Parallel()
	// A fake host layout under a temp dir: an engine socket at
	// <tmp>/run/containerd/containerd.sock registered as containerd's.
	root := t.TempDir()
	sock := filepath.Join(root, "run", "containerd", "containerd.sock")
	listenUnix(t, sock)
	g := New([]EngineSocket{{"containerd", sock}, {"Podman (rootless)", filepath.Join(root, "user", "*", "podman.sock")}})
	podman := filepath.Join(root, "user", "1000", "podman.sock")
	listenUnix(t, podman)

	hardlink := filepath.Join(root, "innocent", "cache.sock")
	if err := os.MkdirAll(filepath.Dir(hardlink), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(sock, hardlink); err != nil {
		t.Fatal(err)
	}
	deepLink := filepath.Join(root, "data", "a", "b", "c", "x")
	if err := os.MkdirAll(filepath.Dir(deepLink), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(sock, deepLink); err != nil {
		t.Fatal(err)
	}
	symDir := filepath.Join(root, "var-run")
	if err := os.Symlink(filepath.Join(root, "run"), symDir); err != nil {
		t.Fatal(err)
	}
	symSock := filepath.Join(root, "engine.sock")
	if err := os.Symlink(sock, symSock); err != nil {
		t.Fatal(err)
	}
	toRoot := filepath.Join(root, "host")
	if err := os.Symlink("/", toRoot); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/self", filepath.Join(root, "self")); err != nil {
		t.Fatal(err)
	}
	ok := filepath.Join(root, "cache")
	if err := os.MkdirAll(ok, 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket of no known engine (an SSH agent's, say) is the operator's choice.
	other := filepath.Join(root, "agent", "ssh.sock")
	listenUnix(t, other)
	okLink := filepath.Join(root, "cache-link")
	if err := os.Symlink(ok, okLink); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, source string
		want         string // resolved source when accepted
		refused      string // part of the refusal
		otherErr     string // an error that is not a refusal
	}{
		{name: "the socket", source: sock, refused: "is the containerd socket " + sock},
		{name: "a hard link to the socket", source: hardlink, refused: "is the containerd socket"},
		{name: "the directory holding the socket", source: filepath.Dir(sock), refused: "which holds the containerd socket"},
		{name: "an ancestor of the socket", source: filepath.Join(root, "run"), refused: "which holds the containerd socket"},
		{name: "the socket, spelled with /./ and ..", source: filepath.Join(root, "run") + "/./containerd/../containerd/containerd.sock", refused: "containerd socket"},
		{name: "a symlink to the socket's ancestor", source: symDir, refused: "resolves to " + filepath.Join(root, "run")},
		{name: "a symlink to the socket", source: symSock, refused: "containerd socket"},
		{name: "a directory holding a hard link", source: filepath.Join(root, "innocent"), refused: "holds " + hardlink + ", a hard link to the containerd socket"},
		{name: "a deep hard link", source: filepath.Join(root, "data"), refused: "a hard link to the containerd socket"},
		{name: "a globbed user socket", source: filepath.Dir(podman), refused: "Podman (rootless) socket"},
		{name: "the host root", source: "/", refused: "the host's root directory"},
		{name: "the host root as /./", source: "/./", refused: "the host's root directory"},
		{name: "a symlink to the host root", source: toRoot, refused: "the host's root directory"},
		{name: "proc", source: "/proc", refused: "/proc (a kernel filesystem)"},
		{name: "a process's root via proc", source: "/proc/1/root", refused: "kernel filesystem"},
		{name: "a symlink into proc", source: filepath.Join(root, "self"), refused: "kernel filesystem"},
		{name: "under proc", source: "/proc/self/fd", refused: "kernel filesystem"},
		{name: "sys", source: "/sys", refused: "/sys"},
		{name: "cgroups", source: "/sys/fs/cgroup", refused: "kernel filesystem"},
		{name: "dev", source: "/dev", refused: "/dev"},
		{name: "a device", source: "/dev/null", refused: "/dev"},
		{name: "an ordinary directory", source: ok, want: ok},
		{name: "a symlink to an ordinary directory", source: okLink, want: ok},
		{name: "another socket", source: other, want: other},
		{name: "missing", source: filepath.Join(root, "nope"), otherErr: "must exist"},
		{name: "relative", source: "run", otherErr: "not an absolute path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := g.Check(tc.source)
			switch {
			case tc.refused != "":
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("Check(%s) = %q, %v; want a refusal with %q", tc.source, got, err, tc.refused)
				}
			case tc.otherErr != "":
				if err == nil || errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.otherErr) {
					t.Fatalf("Check(%s) = %q, %v; want an error with %q", tc.source, got, err, tc.otherErr)
				}
			default:
				if err != nil || got != tc.want {
					t.Fatalf("Check(%s) = %q, %v; want %q", tc.source, got, err, tc.want)
				}
			}
		})
	}
}

// TestCheckSeesTheHostNow: a socket that appears after the guard was made is
// refused at the next check (the per-run re-check relies on it).
func TestCheckSeesTheHostNow(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "buildkit")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	g := New([]EngineSocket{{"BuildKit", filepath.Join(dir, "buildkitd.sock")}})
	if _, err := g.Check(dir); err != nil {
		t.Fatalf("before the socket exists: %v", err)
	}
	listenUnix(t, filepath.Join(dir, "buildkitd.sock"))
	if _, err := g.Check(dir); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "BuildKit socket") {
		t.Fatalf("after the socket appeared: %v, want a refusal naming BuildKit", err)
	}
}

func TestKnownSockets(t *testing.T) {
	t.Parallel()
	has := func(s []EngineSocket, engine, p string) bool {
		for _, e := range s {
			if e.Path == p && strings.Contains(e.Engine, engine) {
				return true
			}
		}
		return false
	}
	base := KnownSockets("")
	for _, want := range []struct{ engine, path string }{
		{"Docker", "/var/run/docker.sock"}, {"Docker", "/run/docker.sock"},
		{"containerd", "/run/containerd/containerd.sock"}, {"Podman", "/run/podman/podman.sock"},
		{"Podman", "/run/user/*/podman/podman.sock"}, {"CRI-O", "/var/run/crio/crio.sock"},
		{"BuildKit", "/run/buildkit/buildkitd.sock"},
	} {
		if !has(base, want.engine, want.path) {
			t.Errorf("KnownSockets misses %s %s", want.engine, want.path)
		}
	}
	if s := KnownSockets("unix:///srv/engine/api.sock"); !has(s, "DOCKER_HOST", "/srv/engine/api.sock") {
		t.Errorf("DOCKER_HOST socket not known: %v", s)
	}
	if s := KnownSockets("tcp://127.0.0.1:2375"); len(s) != len(base) {
		t.Errorf("a tcp DOCKER_HOST added a socket: %v", s)
	}
}

// TestRealEngineSocket: the Docker socket of this host, when there is one, is
// refused with its directory and a hard link to it.
func TestRealEngineSocket(t *testing.T) {
	g := New(KnownSockets(os.Getenv("DOCKER_HOST")))
	present := g.Sockets()
	if len(present) == 0 {
		t.Skip("no container-engine socket on this host")
	}
	for _, p := range present {
		for _, src := range []string{p, filepath.Dir(p)} {
			if _, err := g.Check(src); !errors.Is(err, ErrRefused) {
				t.Errorf("Check(%s) = %v, want a refusal", src, err)
			}
		}
	}
}
