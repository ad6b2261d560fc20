package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/hangar-dev/hangar/platform/runimage"
)

// devRunnerImage is the image the demo runs in; examples/runs/hello.json
// names it too.
const devRunnerImage = "hangar/demo-runner:latest"

// shellPackage is the package of the runner image's shell, in the hangarctl
// module.
const shellPackage = "./internal/devshell/hangar-sh"

// runnerRootfs is the file system of the demo's runner image: the project's
// own static shell (hangar-sh, built now with CGO_ENABLED=0 from the hangarctl
// module's source) or, when that cannot be built here, the host's static
// busybox (busybox: paths to try, nil for Debian's; "off" in the list
// disables it). The second result says which, for the user.
func runnerRootfs(ctx context.Context, workDir string, busybox []string) (*runimage.Rootfs, string, error) {
	fs, shellErr := shellRootfs(ctx, workDir)
	if shellErr == nil {
		return fs, "the project's own static shell (hangar-sh, built from source)", nil
	}
	if len(busybox) == 1 && busybox[0] == "off" {
		return nil, "", fmt.Errorf("%w; the busybox fall-back is off (HANGAR_DEV_BUSYBOX=off)", shellErr)
	}
	fs, bbErr := runimage.Busybox(busybox)
	if bbErr != nil {
		return nil, "", fmt.Errorf("%w; and %w", shellErr, bbErr)
	}
	return fs, "the host's static busybox (hangar-sh could not be built: " + shellErr.Error() + ")", nil
}

// shellRootfs builds hangar-sh into workDir and packages it.
func shellRootfs(ctx context.Context, workDir string) (*runimage.Rootfs, error) {
	modDir, err := hangarctlModuleDir()
	if err != nil {
		return nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, errors.New("building hangar-sh needs the Go toolchain (go is not on PATH)")
	}
	out := filepath.Join(workDir, "runner", "hangar-sh")
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, shellPackage)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s in %s: %w: %s", shellPackage, modDir, err, strings.TrimSpace(string(msg)))
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	return runimage.Shell("hangar shell", "sh", bin, shellCommands())
}

// relayPackage is the executor's output relay, the entrypoint of every run
// container with the Docker runtime (ADR 0016).
const relayPackage = "github.com/hangar-dev/hangar/services/executor/cmd/hangar-relay"

// buildRelay builds the static hangar-relay into workDir and returns its path.
func buildRelay(ctx context.Context, workDir string) (string, error) {
	modDir, err := hangarctlModuleDir()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("building hangar-relay needs the Go toolchain (go is not on PATH)")
	}
	out := filepath.Join(workDir, "runner", "hangar-relay")
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		return "", err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, relayPackage)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %w: %s", relayPackage, modDir, err, strings.TrimSpace(string(msg)))
	}
	return out, nil
}

// hangarctlModuleDir finds the source of the hangarctl module: from the
// working directory up (the repository, or the module itself), else where
// this binary was built from (go run, go build in the tree).
func hangarctlModuleDir() (string, error) {
	isModule := func(dir string) bool {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		return err == nil && strings.HasPrefix(string(b), "module github.com/hangar-dev/hangar/cmd/hangarctl\n")
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			for _, c := range []string{dir, filepath.Join(dir, "cmd", "hangarctl")} {
				if isModule(c) {
					return c, nil
				}
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		// file is .../cmd/hangarctl/internal/cli/devimage.go
		if dir := filepath.Join(filepath.Dir(file), "..", ".."); isModule(dir) {
			return filepath.Clean(dir), nil
		}
	}
	return "", errors.New("the source of hangarctl (its go.mod) is not found from the working directory: run hangarctl dev from the repository to build hangar-sh")
}

// busyboxPaths is where dev looks for a static busybox: HANGAR_DEV_BUSYBOX
// (paths separated by ':', or "off"), else Debian's paths.
func busyboxPaths(setting string) []string {
	if setting == "" {
		return nil
	}
	return strings.Split(setting, ":")
}

// shellCommands are the commands hangar-sh provides (devshell.Commands; a
// test keeps them equal): links to it in the image's /bin. The list is
// repeated here so that hangarctl does not link the shell itself.
func shellCommands() []string {
	return []string{"sh", "sleep", "cat", "ls", "env", "mkdir", "rm", "id", "hostname", "echo", "printf", "true", "false", "test", "["}
}
