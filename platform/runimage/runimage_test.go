package runimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func entries(t *testing.T, fs *Rootfs) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(fs.Tar))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read image tar: %v", err)
		}
		out[h.Name] = h
	}
}

func TestBusyboxRootfs(t *testing.T) {
	fs, err := Busybox(nil)
	if err != nil {
		t.Fatalf("Busybox: %v (the tests need Debian's busybox-static: scripts/setup.sh installs it)", err)
	}
	e := entries(t, fs)
	for _, name := range []string{"bin/busybox", "etc/passwd", "etc/group", "tmp/", "root/"} {
		if e[name] == nil {
			t.Errorf("image tar has no %s", name)
		}
	}
	for _, a := range []string{"sh", "echo", "cat", "sleep"} {
		h := e["bin/"+a]
		if h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s is %+v, want a link to busybox", a, h)
		}
	}
	if e["tmp/"].Mode != 0o1777 {
		t.Errorf("tmp/ mode %o, want 1777", e["tmp/"].Mode)
	}
}

func TestFindStaticBusyboxSkipsWhatCannotRun(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dynamic, err := exec.LookPath("ls") // Debian's ls is dynamically linked
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		paths []string
		want  string
	}{
		{"missing", []string{filepath.Join(dir, "none")}, "no such file"},
		{"not ELF", []string{notELF}, "not an ELF binary"},
		{"dynamic", []string{dynamic}, "dynamically linked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := FindStaticBusybox(tc.paths)
			if !errors.Is(err, ErrNoBusybox) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "apt-get install -y busybox-static") {
				t.Errorf("FindStaticBusybox(%v) = %v, want ErrNoBusybox naming %q and the package", tc.paths, err, tc.want)
			}
		})
	}
	b, err := os.ReadFile(dynamic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Shell("x", "sh", b, nil); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("Shell of a dynamic binary = %v, want a refusal naming CGO_ENABLED=0", err)
	}
}

// TestEnsureImportsOnce imports a busybox image into the real engine with the
// docker CLI, runs it, and checks that a second Ensure imports nothing and
// that other content under the same name is imported again.
func TestEnsureImportsOnce(t *testing.T) {
	if err := exec.Command("docker", "version").Run(); err != nil {
		t.Fatalf("the Docker engine is required: %v", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	ref := "hangar-test/runimage-" + hex.EncodeToString(b[:]) + ":latest"
	t.Cleanup(func() { _ = exec.Command("docker", "image", "rm", "-f", ref).Run() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fs, err := Busybox(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		got, err := Ensure(ctx, CLI{}, ref, fs)
		if err != nil || got != want {
			t.Fatalf("Ensure #%d = %v, %v; want %v, nil", i+1, got, err, want)
		}
	}
	// Another content under the same name replaces the image.
	other := *fs
	other.Message += " (changed)"
	if got, err := Ensure(ctx, CLI{}, ref, &other); err != nil || !got {
		t.Fatalf("Ensure of changed content = %v, %v; want an import", got, err)
	}
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", "none", ref, "sh", "-c", "echo hi from $(id -un)").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hi from root" {
		t.Fatalf("docker run %s: %v\n%s", ref, err, out)
	}
}
