package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// KubeVersion is the release scripts/kube/build.sh builds by default.
const KubeVersion = "v1.34.4"

// Kube is a real single-node Kubernetes booted by scripts/kube/up.sh.
type Kube struct {
	Root, Dir, Kubeconfig string
	BootTime              time.Duration
}

// KubeUnavailable says why the cluster cannot be booted here, "" if it can:
// the binaries of scripts/kube/build.sh are not built (in $HANGAR_KUBE_CACHE
// or .cache/kube/<version>), the tests do not run as root, or
// HANGAR_KUBE_TESTS=off.
func KubeUnavailable(root string) string {
	if v := os.Getenv("HANGAR_KUBE_TESTS"); v == "off" || v == "0" || v == "false" {
		return "HANGAR_KUBE_TESTS=" + v + ": the Kubernetes cluster tests are switched off"
	}
	bin := filepath.Join(root, ".cache", "kube", KubeVersion, "bin")
	if c := os.Getenv("HANGAR_KUBE_CACHE"); c != "" {
		bin = filepath.Join(c, "bin")
	}
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

// StartKube boots the cluster with the given Docker images imported into its
// node, or skips the test when KubeUnavailable says so. It is torn down
// (scripts/kube/down.sh) in t.Cleanup, whatever the test's result.
func StartKube(t testing.TB, root string, images ...string) *Kube {
	t.Helper()
	if why := KubeUnavailable(root); why != "" {
		t.Skip(why)
	}
	dir, err := os.MkdirTemp("", "hangar-kube-")
	if err != nil {
		t.Fatal(err)
	}
	k := &Kube{Root: root, Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig")}
	t.Cleanup(func() {
		if out, err := k.script(nil, "down.sh", dir); err != nil {
			t.Errorf("scripts/kube/down.sh: %v\n%s", err, out)
		}
	})
	if out, err := k.script(nil, "deps.sh"); err != nil {
		t.Fatalf("scripts/kube/deps.sh: %v\n%s", err, out)
	}
	start := time.Now()
	out, err := k.script([]string{"HANGAR_KUBE_IMAGES=" + strings.Join(images, " ")}, "up.sh", dir)
	k.BootTime = time.Since(start)
	if err != nil {
		t.Fatalf("scripts/kube/up.sh: %v\n%s", err, out)
	}
	t.Logf("cluster booted in %s", k.BootTime.Round(100*time.Millisecond))
	return k
}

// Kubectl runs kubectl (admin) against the cluster.
func (k *Kube) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := k.TryKubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryKubectl runs kubectl (admin) and returns its output and error.
func (k *Kube) TryKubectl(args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", k.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// APIServer is the API server's address (host:port).
func (k *Kube) APIServer(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k.Dir, "ports"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "apiserver="); ok {
			return "127.0.0.1:" + v
		}
	}
	t.Fatal("no apiserver port in " + k.Dir)
	return ""
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// service account ns/name with a fresh token (TokenRequest), and returns its
// path: what an executor pod gets, outside a pod.
func (k *Kube) ServiceAccountKubeconfig(t testing.TB, ns, name string) string {
	t.Helper()
	token := strings.TrimSpace(k.Kubectl(t, "-n", ns, "create", "token", name, "--duration", "2h"))
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://%s", certificate-authority: "%s"}
users:
- name: %s
  user: {token: "%s"}
contexts:
- name: c
  context: {cluster: c, user: %s, namespace: %s}
current-context: c
`, k.APIServer(t), filepath.Join(k.Dir, "pki", "ca.crt"), name, token, name, ns)
	return WriteFile(t, t.TempDir(), "kubeconfig", cfg)
}

func (k *Kube) script(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(k.Root, "scripts", "kube", name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// ImportImage loads a Docker image of the host's engine into the node's
// containerd (docker save | ctr import), as up.sh does with
// HANGAR_KUBE_IMAGES.
func (k *Kube) ImportImage(t testing.TB, image string) {
	t.Helper()
	sock := filepath.Join(k.Dir, "containerd", "containerd.sock")
	cmd := exec.Command("sh", "-c", `docker save "$1" | ctr -a "$2" -n k8s.io images import - >/dev/null`, "sh", image, sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import %s into the node: %v\n%s", image, err, out)
	}
}

// TrustRegistry tells the node's containerd to reach the registry at addr
// (a loopback HOST:PORT) over plain HTTP: a hosts.toml under the CRI registry
// config_path that up.sh sets, read at each pull. Removed in t.Cleanup.
func (k *Kube) TrustRegistry(t testing.TB, addr string) {
	t.Helper()
	dir := filepath.Join(k.Dir, "containerd", "certs.d", addr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	WriteFile(t, dir, "hosts.toml", fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", addr, addr))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
}

// PushFromNode tags the node's image local as ADDR/repo in the node's
// containerd, pushes it to r with r's credentials, and removes that name from
// the node again, so that a pod of it must be pulled through a pull Secret.
// It returns the pushed image name.
func (k *Kube) PushFromNode(t testing.TB, r *Registry, local, repo string) string {
	t.Helper()
	image := r.Addr + "/" + repo
	sock := filepath.Join(k.Dir, "containerd", "containerd.sock")
	for _, args := range [][]string{
		{"tag", "--force", local, image},
		{"push", "--plain-http", "--user", r.User + ":" + r.Password, image},
		{"rm", image},
	} {
		out, err := exec.Command("ctr", append([]string{"-a", sock, "-n", "k8s.io", "images"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr images %s: %v\n%s", args[0], err, out)
		}
	}
	return image
}

// PullSecret creates the kubernetes.io/dockerconfigjson Secret name in ns
// with r's credentials.
func (k *Kube) PullSecret(t testing.TB, ns, name string, r *Registry) {
	t.Helper()
	k.Kubectl(t, "-n", ns, "create", "secret", "docker-registry", name,
		"--docker-server="+r.Addr, "--docker-username="+r.User, "--docker-password="+r.Password)
}
