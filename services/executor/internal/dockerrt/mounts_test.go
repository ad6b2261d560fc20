package dockerrt

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/services/executor/internal/mountguard"
)

func TestParseMounts(t *testing.T) {
	t.Parallel()
	a, b := t.TempDir(), t.TempDir()
	link := filepath.Join(t.TempDir(), "sock-link")
	if err := os.Symlink("/run", link); err != nil {
		t.Fatal(err)
	}
	guard := mountguard.New(mountguard.KnownSockets(""))
	tests := []struct {
		in      string
		want    []Mount
		wantErr string
	}{
		{in: "", want: nil},
		{in: " , ", want: nil},
		{in: a + ":/cache", want: []Mount{{Source: a, Target: "/cache"}}},
		{
			in: a + ":/a:ro, " + b + "/:/b/:rw,",
			want: []Mount{
				{Source: a, Target: "/a", ReadOnly: true},
				{Source: b, Target: "/b"},
			},
		},
		{in: "/opt/a", wantErr: `mount "/opt/a": want /host:/container[:ro]`},
		{in: "/opt/a:/a:ro:x", wantErr: `mount "/opt/a:/a:ro:x"`},
		{in: "/opt/a:/a:rx", wantErr: `mount "/opt/a:/a:rx": unknown mode "rx"`},
		{in: "opt/a:/a", wantErr: `mount "opt/a:/a": source "opt/a" is not an absolute path`},
		{in: "/opt/a:a", wantErr: `mount "/opt/a:a": target "a" is not an absolute path`},
		{in: a + ":/ok,/opt/a:/", wantErr: `mount "/opt/a:/": target must not be /`},
		{in: "/opt/a:/workspace", wantErr: "reserved for the run's workspace"},
		{in: a + "/missing:/m", wantErr: "cannot be examined on this host (it must exist)"},
		{in: "/var/run/docker.sock:/var/run/docker.sock", wantErr: "is the Docker socket path"},
		{in: "/run/docker.sock:/tmp/d.sock:ro", wantErr: "the Docker socket /"},
		{in: a + ":/var/run/docker.sock", wantErr: "target /var/run/docker.sock is the Docker socket path: no Docker socket inside runs"},
		{in: a + ":/run/docker.sock", wantErr: "no Docker socket inside runs"},
		{in: "/var/run:/host-run", wantErr: "which holds the Docker socket"},
		{in: "/run/:/host-run", wantErr: "which holds the Docker socket"},
		{in: "/:/host", wantErr: "the host's root directory"},
		{in: "/.:/host", wantErr: "the host's root directory"},
		{in: "/proc:/p", wantErr: "kernel filesystem"},
		{in: "/var/run/../run/docker.sock:/s", wantErr: "Docker socket"},
		{in: link + ":/r", wantErr: "resolves to /run"},
	}
	for _, tc := range tests {
		got, err := ParseMounts(tc.in, guard)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseMounts(%q) error = %v, want one with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseMounts(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestWorkingDir(t *testing.T) {
	t.Parallel()
	ws := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ws, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, root, want, wantErr string
	}{
		{ws, "", "/workspace", ""},
		{ws, "/", "/workspace", ""},
		{ws, "a/b", "/workspace/a/b", ""},
		{ws, "/a/b/", "/workspace/a/b", ""},
		{ws, "a/../a/b", "/workspace/a/b", ""},
		{ws, "a/../..", "", "leaves the workspace"},
		{ws, "missing", "", "no such file"},
		{"", "any/thing", "/workspace/any/thing", ""},
	}
	for _, tc := range tests {
		got, err := workingDir(tc.host, tc.root)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("workingDir(%q) error = %v, want %q", tc.root, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("workingDir(%q) = %q, %v, want %q", tc.root, got, err, tc.want)
		}
	}
}
