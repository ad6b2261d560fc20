// Package dockertest builds the images that Docker tests use on machines that
// cannot pull any: a tiny shell image is imported from the host's static
// busybox (Debian's busybox-static), with no registry involved.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// DefaultBusyboxTag is the tag BusyboxImage uses when given "".
const DefaultBusyboxTag = "hangar-test/busybox:latest"

// busyboxPaths are where Debian's busybox-static installs the binary.
func busyboxPaths() []string {
	return []string{"/bin/busybox", "/usr/bin/busybox"}
}

// busyboxApplets are the commands linked to busybox in the image's /bin.
func busyboxApplets() []string {
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

// ImageClient is the part of the Docker client BusyboxImage uses.
type ImageClient interface {
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImageImport(ctx context.Context, source client.ImageImportSource, ref string, opts client.ImageImportOptions) (client.ImageImportResult, error)
}

// BusyboxImage makes sure the engine has tag ("" means DefaultBusyboxTag): an
// image holding the host's static busybox as /bin/busybox, links for the
// common commands (sh, echo, cat, sleep, tar, grep, ...), /etc/passwd and
// /etc/group with root and nobody, and /tmp. It is built locally with the
// API's image import, no pull. It does nothing if the tag exists.
func BusyboxImage(ctx context.Context, cli ImageClient, tag string) error {
	if tag == "" {
		tag = DefaultBusyboxTag
	}
	if _, err := cli.ImageInspect(ctx, tag); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("busybox image: inspect %s: %w", tag, err)
	}
	bin, err := staticBusybox()
	if err != nil {
		return fmt.Errorf("busybox image: %w", err)
	}
	var buf bytes.Buffer
	if err := writeRootfs(&buf, bin); err != nil {
		return fmt.Errorf("busybox image: %w", err)
	}
	resp, err := cli.ImageImport(ctx, client.ImageImportSource{Source: &buf, SourceName: "-"}, tag, client.ImageImportOptions{
		Message: "hangar test image: static busybox",
		Changes: []string{`CMD ["/bin/sh"]`, "ENV PATH=/bin"},
	})
	if err != nil {
		return fmt.Errorf("busybox image: import %s: %w", tag, err)
	}
	defer resp.Close()
	dec := json.NewDecoder(resp)
	for {
		var msg jsonstream.Message
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("busybox image: import %s: %w", tag, err)
		}
		if msg.Error != nil {
			return fmt.Errorf("busybox image: import %s: %s", tag, msg.Error.Message)
		}
	}
	if _, err := cli.ImageInspect(ctx, tag); err != nil {
		return fmt.Errorf("busybox image: inspect %s after import: %w", tag, err)
	}
	return nil
}

// staticBusybox returns the host's busybox binary, which must be statically
// linked to run in an image with no libc.
func staticBusybox() ([]byte, error) {
	var errs []error
	for _, p := range busyboxPaths() {
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s is not an ELF binary: %w", p, err)
		}
		dynamic := false
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				dynamic = true
			}
		}
		f.Close()
		if dynamic {
			errs = append(errs, fmt.Errorf("%s is dynamically linked", p))
			continue
		}
		return b, nil
	}
	return nil, fmt.Errorf("no static busybox (install it: apt-get install -y busybox-static): %w", errors.Join(errs...))
}

// writeRootfs writes the image's file system as a tar stream.
func writeRootfs(w io.Writer, busybox []byte) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime})
	}
	file := func(name string, mode int64, content []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content)), ModTime: mtime}); err != nil {
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
	if err := file("bin/busybox", 0o755, busybox); err != nil {
		return fmt.Errorf("write image tar: %w", err)
	}
	for _, a := range busyboxApplets() {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mtime}); err != nil {
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
