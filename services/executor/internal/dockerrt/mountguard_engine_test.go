package dockerrt

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/mountguard"
)

// engineHost is a host layout for mount tests: a real unix socket registered
// as containerd's, next to the engine sockets this host really has.
type engineHost struct {
	root, containerd string
	guard            *mountguard.Guard
}

func newEngineHost(t *testing.T) *engineHost {
	t.Helper()
	h := &engineHost{root: t.TempDir()}
	h.containerd = filepath.Join(h.root, "run", "containerd", "containerd.sock")
	if err := os.MkdirAll(filepath.Dir(h.containerd), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", h.containerd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h.guard = mountguard.New(append(mountguard.KnownSockets(os.Getenv("DOCKER_HOST")),
		mountguard.EngineSocket{Engine: "containerd", Path: h.containerd}))
	return h
}

// TestExtraMountsRefusedByIdentity: on the real engine, every way of
// handing a run an engine socket is refused when the runtime is made, and
// an ordinary directory is mounted.
func TestExtraMountsRefusedByIdentity(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	h := newEngineHost(t)

	hardlinkDir := filepath.Join(h.root, "cache")
	if err := os.MkdirAll(hardlinkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(h.containerd, filepath.Join(hardlinkDir, "state.sock")); err != nil {
		t.Fatal(err)
	}
	symlink := filepath.Join(h.root, "var-run")
	if err := os.Symlink(filepath.Join(h.root, "run"), symlink); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, source, want string }{
		{"containerd's socket", h.containerd, "is the containerd socket"},
		{"a hard link to containerd's socket", filepath.Join(hardlinkDir, "state.sock"), "is the containerd socket"},
		{"a directory holding a hard link", hardlinkDir, "a hard link to the containerd socket"},
		{"the directory holding the socket", filepath.Dir(h.containerd), "which holds the containerd socket"},
		{"an ancestor (/var/run style)", filepath.Join(h.root, "run"), "which holds the containerd socket"},
		{"a symlink to the ancestor", symlink, "resolves to " + filepath.Join(h.root, "run")},
	}
	// The engine's own socket, when this host has it at a known path: the
	// socket, a hard link to it, and its directory.
	if socks := h.guard.Sockets(); len(socks) > 0 {
		real, err := filepath.EvalSymlinks(socks[0])
		if err != nil {
			t.Fatal(err)
		}
		// A hard link must be on the socket's file system: next to it.
		linkDir, err := os.MkdirTemp(filepath.Dir(real), "hangar-mount-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(linkDir) })
		link := filepath.Join(linkDir, "innocent.sock")
		if err := os.Link(real, link); err != nil {
			t.Fatal(err)
		}
		cases = append(cases,
			struct{ name, source, want string }{"the engine's socket", socks[0], "socket"},
			struct{ name, source, want string }{"a hard link to the engine's socket", link, "socket"},
			struct{ name, source, want string }{"a directory holding that hard link", linkDir, "a hard link to the"},
			struct{ name, source, want string }{"the engine socket's directory", filepath.Dir(socks[0]), "which holds"},
		)
	} else {
		t.Log("this host has no engine socket at a known path: only the registered containerd socket is tried")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(cli, Options{ExecutorID: uniqueID("exec"), MountGuard: h.guard,
				ExtraMounts: []Mount{{Source: tc.source, Target: "/mnt/x"}}})
			if !errors.Is(err, mountguard.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New with a mount of %s: %v; want a refusal with %q", tc.source, err, tc.want)
			}
			if _, err := ParseMounts(tc.source+":/mnt/x:ro", h.guard); !errors.Is(err, mountguard.ErrRefused) {
				t.Fatalf("ParseMounts %s: %v; want a refusal", tc.source, err)
			}
		})
	}

	t.Run("an ordinary directory", func(t *testing.T) {
		dir := filepath.Join(h.root, "tools")
		writeFile(t, filepath.Join(dir, "tool.txt"), "a tool\n", 0o644)
		mounts, err := ParseMounts(dir+":/mnt/tools:ro", h.guard)
		if err != nil {
			t.Fatal(err)
		}
		rt := newRuntime(t, cli, Options{ExtraMounts: mounts, MountGuard: h.guard})
		tj := newJob(phase("plan", "cat /mnt/tools/tool.txt"))
		wantFinished(t, runJob(t, rt, tj), tj)
		if got := tj.stdout.String(); got != "a tool\n" {
			t.Errorf("stdout %q", got)
		}
	})
}

// TestExtraMountsRecheckedPerRun: a mount accepted at start is checked again
// before each container is created; once the host has changed (a hard link
// to an engine socket put into the mounted directory), the run fails before
// any container exists.
func TestExtraMountsRecheckedPerRun(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	h := newEngineHost(t)
	dir := filepath.Join(h.root, "shared")
	writeFile(t, filepath.Join(dir, "note.txt"), "shared\n", 0o644)
	mounts, err := ParseMounts(dir+":/mnt/shared", h.guard)
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, cli, Options{ExtraMounts: mounts, MountGuard: h.guard})
	tj := newJob(phase("plan", "cat /mnt/shared/note.txt"))
	wantFinished(t, runJob(t, rt, tj), tj)

	if err := os.Link(h.containerd, filepath.Join(dir, "x.sock")); err != nil {
		t.Fatal(err)
	}
	var created []string
	rt.created = func(id string) { created = append(created, id) }
	tj = newJob(phase("plan", "echo should-not-run"))
	res := runJob(t, rt, tj)
	if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(res.Reason, "HANGAR_WORKER_EXTRA_MOUNTS") ||
		!strings.Contains(res.Reason, "a hard link to the containerd socket") {
		t.Fatalf("result %+v, want FAILED naming the variable and the containerd socket", res)
	}
	if len(created) != 0 || tj.stdout.String() != "" {
		t.Errorf("containers created %v, stdout %q: want none", created, tj.stdout)
	}
}
