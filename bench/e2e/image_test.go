package e2e

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"
)

// benchImage is the runner image of every benchmark run, Hangar's and Docker's
// alike: the host's static busybox, imported with `docker import` (no registry).
const benchImage = "hangar-bench/busybox:latest"

var imageOnce = sync.OnceValue(ensureImage)

// ensureImage imports benchImage unless the engine has it, as the executor's
// dockertest package does through the API: busybox as /bin/busybox, links for
// its applets, /etc/passwd and /etc/group, /tmp.
func ensureImage() error {
	if exec.Command("docker", "image", "inspect", benchImage).Run() == nil {
		return nil
	}
	var bin []byte
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			static = static && prog.Type != elf.PT_INTERP
		}
		f.Close()
		if static {
			bin = b
			break
		}
	}
	if bin == nil {
		return errors.New("no static busybox on this host: apt-get install -y busybox-static")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	for _, d := range []string{"bin", "etc", "root", "tmp"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: mtime}); err != nil {
			return err
		}
	}
	file := func(name string, mode int64, content []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	if err := file("bin/busybox", 0o755, bin); err != nil {
		return err
	}
	for _, a := range []string{"sh", "ash", "echo", "cat", "sleep", "ls", "env", "printf", "head", "tail", "yes", "true",
		"false", "tar", "id", "wc", "test", "[", "mkdir", "rm", "cp", "mv", "ln", "chmod", "chown", "dd", "tr", "sed"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mtime}); err != nil {
			return err
		}
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")); err != nil {
		return err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	cmd := exec.Command("docker", "import", "--change", `CMD ["/bin/sh"]`, "--change", "ENV PATH=/bin", "-", benchImage)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker import %s: %v\n%s", benchImage, err, out)
	}
	return nil
}
