// Package kubetest boots, for tests, the real single-node Kubernetes of
// scripts/kube (up.sh / down.sh) from binaries built by scripts/kube/build.sh.
//
// Tests that need the cluster skip, saying why, only when those binaries are
// not built (or the tests do not run as root, or HANGAR_KUBE_TESTS=off):
// a developer machine without the build still passes. CI builds them.
package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Version is the Kubernetes release of the cluster (build.sh's default).
const Version = "v1.34.4"

// Cluster is a running cluster.
type Cluster struct {
	Root       string // the repository
	Dir        string // the cluster's state directory (up.sh DIR)
	Kubeconfig string // admin kubeconfig
	Containerd string // the node's containerd socket
	BootTime   time.Duration
}

// FindRoot returns the repository root: the nearest parent of the working
// directory holding scripts/kube/up.sh.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "kube", "up.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kubetest: scripts/kube/up.sh not found above the working directory")
		}
		dir = parent
	}
}

// BinDir is where build.sh caches the binaries.
func BinDir(root string) string {
	if c := os.Getenv("HANGAR_KUBE_CACHE"); c != "" {
		return filepath.Join(c, "bin")
	}
	return filepath.Join(root, ".cache", "kube", Version, "bin")
}

// Unavailable returns why the cluster cannot be booted here, "" if it can.
func Unavailable() string {
	if v := os.Getenv("HANGAR_KUBE_TESTS"); v == "off" || v == "0" || v == "false" {
		return "HANGAR_KUBE_TESTS=" + v + ": the Kubernetes cluster tests are switched off"
	}
	root, err := FindRoot()
	if err != nil {
		return err.Error()
	}
	bin := BinDir(root)
	for _, b := range []string{"kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Sprintf("the Kubernetes binaries are not built (%s missing): run scripts/kube/build.sh (about 15 minutes once) to run the cluster tests", filepath.Join(bin, b))
		}
	}
	if os.Geteuid() != 0 {
		return "the Kubernetes cluster tests boot a kubelet and need root"
	}
	return ""
}

// Up installs the Debian packages the cluster needs (scripts/kube/deps.sh)
// and boots it in a fresh temporary directory, with the given Docker images
// imported into the node. Call Down in every case, even after an error.
func Up(images ...string) (*Cluster, error) {
	root, err := FindRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hangar-kube-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Root: root, Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), Containerd: filepath.Join(dir, "containerd", "containerd.sock")}
	if out, err := script(root, nil, "deps.sh"); err != nil {
		return c, fmt.Errorf("scripts/kube/deps.sh: %w\n%s", err, out)
	}
	start := time.Now()
	out, err := script(root, []string{"HANGAR_KUBE_IMAGES=" + strings.Join(images, " ")}, "up.sh", dir)
	c.BootTime = time.Since(start)
	if err != nil {
		return c, fmt.Errorf("scripts/kube/up.sh: %w\n%s", err, out)
	}
	return c, nil
}

// Down tears the cluster down (scripts/kube/down.sh) and removes its
// directory.
func (c *Cluster) Down() error {
	if c == nil || c.Dir == "" {
		return nil
	}
	out, err := script(c.Root, nil, "down.sh", c.Dir)
	if err != nil {
		return fmt.Errorf("scripts/kube/down.sh: %w\n%s", err, out)
	}
	return nil
}

// Kubectl runs kubectl against the cluster and returns its output.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func script(root string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(root, "scripts", "kube", name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
