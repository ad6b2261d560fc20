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
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Rootfs is an image's file system as a tarball, with the image configuration
// changes (Dockerfile instructions) the import applies and the message the
// image keeps as its comment (naming the content's digest).
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
	sum := sha256.Sum256(buf.Bytes())
	return &Rootfs{
		Kind:    kind,
		Tar:     buf.Bytes(),
		Changes: []string{`CMD ["/bin/sh"]`, "ENV PATH=/bin"},
		Message: message + " (content sha256:" + hex.EncodeToString(sum[:8]) + ")",
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
	// ImageComment returns the comment of ref (the message of its import)
	// and whether the engine has ref at all.
	ImageComment(ctx context.Context, ref string) (comment string, found bool, err error)
	// ImportImage imports rootfs as ref (docker import).
	ImportImage(ctx context.Context, ref string, rootfs *Rootfs) error
}

// Ensure makes sure the engine has ref with the content of fs: it imports fs
// unless ref exists with fs's Message, which names the content's digest (an
// image of an older build is replaced). It reports whether it imported.
func Ensure(ctx context.Context, eng Engine, ref string, fs *Rootfs) (bool, error) {
	comment, found, err := eng.ImageComment(ctx, ref)
	if err != nil {
		return false, fmt.Errorf("runner image %s: %w", ref, err)
	}
	if found && comment == fs.Message {
		return false, nil
	}
	if err := eng.ImportImage(ctx, ref, fs); err != nil {
		return false, fmt.Errorf("runner image %s: import the %s image: %w", ref, fs.Kind, err)
	}
	if comment, found, err := eng.ImageComment(ctx, ref); err != nil || !found || comment != fs.Message {
		return false, fmt.Errorf("runner image %s: not there after the import (found %v, comment %q, %v)", ref, found, comment, err)
	}
	return true, nil
}

// CLI is an Engine that runs the docker command line (for tests and
// benchmarks, which drive the engine as an operator would).
type CLI struct {
	// Env is added to the environment of each docker command (e.g. DOCKER_HOST=...).
	Env []string
}

// ImageComment runs docker image inspect.
func (c CLI) ImageComment(ctx context.Context, ref string) (string, bool, error) {
	cmd := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Comment}}", ref)
	cmd.Env = append(os.Environ(), c.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return strings.TrimSpace(stdout.String()), true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && strings.Contains(strings.ToLower(stderr.String()), "no such image") {
		return "", false, nil
	}
	return "", false, fmt.Errorf("docker image inspect %s: %w: %s", ref, err, strings.TrimSpace(stderr.String()))
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
