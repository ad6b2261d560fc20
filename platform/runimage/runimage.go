// Package runimage builds the small runner images Hangar needs on machines
// that cannot pull any: a root file system written as a tarball (a static
// shell binary, links for the commands it provides, /etc/passwd, /etc/group,
// /tmp) and imported into the local engine, with no registry involved.
//
// It is the one builder of such images: the dev stack (`hangarctl dev`), the
// executor's Docker tests, the end-to-end tests and the benchmarks use it. The
// engine is reached through Engine, so that callers choose how (the Engine API
// client of the executor, or the docker command line: CLI).
package runimage

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Rootfs is an image's file system as a tarball, with the image configuration
// changes (Dockerfile instructions) the import applies.
type Rootfs struct {
	// Kind names what the image holds, for messages ("busybox", "hangar shell").
	Kind    string
	Tar     []byte
	Changes []string
	Message string
}

// BusyboxApplets are the commands linked to busybox in a busybox image's /bin.
func BusyboxApplets() []string {
	return []string{
		"sh", "ash", "echo", "cat", "sleep", "ls", "env", "printf", "seq", "head", "tail",
		"yes", "true", "false", "tar", "id", "wc", "grep", "base64", "test", "[",
		"mkdir", "rm", "rmdir", "touch", "cp", "mv", "ln", "chmod", "chown", "stat",
		"sed", "awk", "cut", "tr", "sort", "uniq", "tee", "xargs", "find", "basename",
		"dirname", "pwd", "kill", "ps", "whoami", "date", "hostname", "ip", "wget",
		"nc", "mount", "md5sum", "sha256sum", "gzip", "gunzip", "dd", "mkfifo", "uname",
		"timeout", "readlink", "realpath", "expr", "su", "nproc", "free",
	}
}

// BusyboxPaths are where Debian's busybox-static installs busybox.
func BusyboxPaths() []string { return []string{"/bin/busybox", "/usr/bin/busybox"} }

// ErrNoBusybox is returned by FindStaticBusybox when no static busybox is found.
var ErrNoBusybox = errors.New("no static busybox (install it: apt-get install -y busybox-static)")

// FindStaticBusybox returns the path and content of the first statically
// linked busybox among paths (BusyboxPaths when nil). A dynamically linked one
// cannot run in an image with no libc and is skipped.
func FindStaticBusybox(paths []string) (string, []byte, error) {
	if paths == nil {
		paths = BusyboxPaths()
	}
	var errs []error
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		static, err := IsStatic(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		if !static {
			errs = append(errs, fmt.Errorf("%s is dynamically linked", p))
			continue
		}
		return p, b, nil
	}
	return "", nil, fmt.Errorf("%w: %w", ErrNoBusybox, errors.Join(errs...))
}

// IsStatic reports whether the ELF binary b needs no dynamic loader.
func IsStatic(b []byte) (bool, error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false, fmt.Errorf("not an ELF binary: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// Busybox is the image of the host's static busybox (paths as for
// FindStaticBusybox): /bin/busybox with links for BusyboxApplets.
func Busybox(paths []string) (*Rootfs, error) {
	_, bin, err := FindStaticBusybox(paths)
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	return build("busybox", "hangar runner image: static busybox", "busybox", bin, BusyboxApplets())
}

// Shell is the image of a static shell binary installed as /bin/<name>,
// with links for the commands it provides (each runs the binary under that
// name, which it dispatches on). The binary must be statically linked.
func Shell(kind, name string, bin []byte, commands []string) (*Rootfs, error) {
	static, err := IsStatic(bin)
	if err != nil {
		return nil, fmt.Errorf("%s image: %w", kind, err)
	}
	if !static {
		return nil, fmt.Errorf("%s image: the binary is dynamically linked: build it with CGO_ENABLED=0", kind)
	}
	return build(kind, "hangar runner image: "+kind, name, bin, commands)
}

func build(kind, message, name string, bin []byte, links []string) (*Rootfs, error) {
	var buf bytes.Buffer
	if err := writeRootfs(&buf, name, bin, links); err != nil {
		return nil, fmt.Errorf("%s image: %w", kind, err)
	}
	return &Rootfs{
		Kind:    kind,
		Tar:     buf.Bytes(),
		Changes: []string{`CMD ["/bin/sh"]`, "ENV PATH=/bin"},
		Message: message,
	}, nil
}

// writeRootfs writes the file system: bin/<name>, links to it, etc/passwd,
// etc/group, root/, tmp/ (1777).
func writeRootfs(w io.Writer, name string, bin []byte, links []string) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	dir := func(n string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n + "/", Mode: mode, ModTime: mtime})
	}
	file := func(n string, mode int64, content []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Size: int64(len(content)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	for _, d := range []string{"bin", "etc", "root", "tmp"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := dir(d, mode); err != nil {
			return fmt.Errorf("write image tar: %w", err)
		}
	}
	if err := file("bin/"+name, 0o755, bin); err != nil {
		return fmt.Errorf("write image tar: %w", err)
	}
	for _, a := range links {
		if a == name {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: name, Mode: 0o777, ModTime: mtime}); err != nil {
			return fmt.Errorf("write image tar: %w", err)
		}
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group := "root:x:0:\nnogroup:x:65534:\n"
	if err := file("etc/passwd", 0o644, []byte(passwd)); err != nil {
		return fmt.Errorf("write image tar: %w", err)
	}
	if err := file("etc/group", 0o644, []byte(group)); err != nil {
		return fmt.Errorf("write image tar: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write image tar: %w", err)
	}
	return nil
}

// Engine is what Ensure needs of a container engine.
type Engine interface {
	// HasImage reports whether the engine has ref.
	HasImage(ctx context.Context, ref string) (bool, error)
	// ImportImage imports rootfs as ref (docker import).
	ImportImage(ctx context.Context, ref string, rootfs *Rootfs) error
}

// Ensure makes sure the engine has ref, importing what build returns when it
// does not. It reports whether it imported the image.
func Ensure(ctx context.Context, eng Engine, ref string, build func() (*Rootfs, error)) (bool, error) {
	ok, err := eng.HasImage(ctx, ref)
	if err != nil {
		return false, fmt.Errorf("runner image %s: %w", ref, err)
	}
	if ok {
		return false, nil
	}
	fs, err := build()
	if err != nil {
		return false, err
	}
	if err := eng.ImportImage(ctx, ref, fs); err != nil {
		return false, fmt.Errorf("runner image %s: import %s image: %w", ref, fs.Kind, err)
	}
	if ok, err := eng.HasImage(ctx, ref); err != nil || !ok {
		return false, fmt.Errorf("runner image %s: not present after the import (%v)", ref, err)
	}
	return true, nil
}

// CLI is an Engine that runs the docker command line (for tests and
// benchmarks, which drive the engine as an operator would).
type CLI struct {
	// Env is added to the environment of each docker command (e.g. DOCKER_HOST=...).
	Env []string
}

// HasImage runs docker image inspect.
func (c CLI) HasImage(ctx context.Context, ref string) (bool, error) {
	cmd := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Id}}", ref)
	cmd.Env = append(os.Environ(), c.Env...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && strings.Contains(strings.ToLower(string(out)), "no such image") {
		return false, nil
	}
	return false, fmt.Errorf("docker image inspect %s: %w: %s", ref, err, strings.TrimSpace(string(out)))
}

// ImportImage runs docker import.
func (c CLI) ImportImage(ctx context.Context, ref string, fs *Rootfs) error {
	args := []string{"import"}
	for _, ch := range fs.Changes {
		args = append(args, "--change", ch)
	}
	args = append(args, "--message", fs.Message, "-", ref)
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdin = bytes.NewReader(fs.Tar)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker import %s: %w: %s", ref, err, strings.TrimSpace(string(out)))
	}
	return nil
}
