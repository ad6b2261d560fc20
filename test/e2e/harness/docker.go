package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/runimage"
)

// RequireDocker fails the test, with what to install, if the docker CLI is
// missing or the engine does not answer.
func RequireDocker(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("docker is required by this test and is not installed: apt-get install docker.io")
	}
	if r := Docker(t, "version", "--format", "{{.Server.Version}}"); r.Code != 0 {
		t.Fatalf("the Docker engine does not answer (is dockerd running? DOCKER_HOST?): %s", r)
	}
}

// Docker runs the docker CLI (2 minutes at most) with extra environment.
func Docker(t testing.TB, args ...string) Result {
	t.Helper()
	return Run(t, 2*time.Minute, nil, "docker", args...)
}

// DockerEnv is Docker with extra environment (e.g. DOCKER_CONFIG=dir).
func DockerEnv(t testing.TB, env []string, args ...string) Result {
	t.Helper()
	return Run(t, 2*time.Minute, env, "docker", args...)
}

// MustDocker is Docker that fails the test on a non-zero exit, and returns
// the trimmed stdout.
func MustDocker(t testing.TB, args ...string) string {
	t.Helper()
	r := Docker(t, args...)
	if r.Code != 0 {
		t.Fatalf("docker %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// RandomName is prefix followed by 8 random hex digits.
func RandomName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// BusyboxImage makes sure the engine has tag: the runner image of the host's
// static busybox (Debian's busybox-static), built by platform/runimage (the
// builder `hangarctl dev` and the benchmarks use too) and imported with
// `docker import` (this machine cannot pull). It does nothing if the tag
// exists with this content.
func BusyboxImage(t testing.TB, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fs, err := runimage.Busybox(nil)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := runimage.Ensure(ctx, runimage.CLI{}, tag, fs); err != nil {
		t.Fatalf("%v", err)
	}
}

// DockerNetwork creates a user-defined bridge network and returns its name and
// subnet (CIDR). It is removed in t.Cleanup.
func DockerNetwork(t testing.TB) (name, subnet string) {
	t.Helper()
	name = RandomName("hangar-e2e-net-")
	MustDocker(t, "network", "create", "--driver", "bridge", "--label", "hangar-e2e=true", name)
	t.Cleanup(func() {
		if r := Docker(t, "network", "rm", name); r.Code != 0 {
			t.Errorf("docker network rm %s: %s", name, r)
		}
	})
	subnet = MustDocker(t, "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", name)
	subnet = strings.Fields(subnet + " ")[0]
	if _, _, err := net.ParseCIDR(subnet); err != nil {
		t.Fatalf("docker network inspect %s: subnet %q: %v", name, subnet, err)
	}
	return name, subnet
}

// ManagedLeftovers returns the containers and volumes labelled
// hangar.managed=true that belong to one of runIDs, as "container NAME (run
// ID)" / "volume NAME (run ID)".
func ManagedLeftovers(t testing.TB, runIDs map[string]bool) []string {
	t.Helper()
	var out []string
	for _, kind := range []string{"container", "volume"} {
		var args []string
		if kind == "container" {
			args = []string{"ps", "-a", "--filter", "label=hangar.managed=true", "--format", `{{.Names}} {{.Label "hangar.run-id"}}`}
		} else {
			args = []string{"volume", "ls", "--filter", "label=hangar.managed=true", "--format", `{{.Name}} {{.Label "hangar.run-id"}}`}
		}
		for _, line := range strings.Split(MustDocker(t, args...), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && runIDs[f[1]] {
				out = append(out, fmt.Sprintf("%s %s (run %s)", kind, f[0], f[1]))
			}
		}
	}
	return out
}

// RemoveManaged force-removes the containers and volumes of runIDs: a
// last-resort cleanup after a failed test, so that nothing is left on the
// engine.
func RemoveManaged(t testing.TB, runIDs map[string]bool) {
	for _, l := range ManagedLeftovers(t, runIDs) {
		f := strings.Fields(l)
		if f[0] == "container" {
			Docker(t, "rm", "-f", "-v", f[1])
		} else {
			Docker(t, "volume", "rm", "-f", f[1])
		}
	}
}

// Registry is Debian's docker-registry on a loopback port with htpasswd basic
// auth.
type Registry struct {
	Addr           string // 127.0.0.1:PORT
	User, Password string
}

// StartRegistry runs docker-registry with one user; it stops in t.Cleanup.
func StartRegistry(t testing.TB, user, password string) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry is required by this test and is not installed: apt-get install docker-registry")
	}
	htpasswd, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Fatalf("htpasswd is required by this test and is not installed: apt-get install apache2-utils")
	}
	dir := t.TempDir()
	r := Run(t, time.Minute, nil, htpasswd, "-Bbn", user, password)
	if r.Code != 0 {
		t.Fatalf("htpasswd: %s", r)
	}
	WriteFile(t, dir, "htpasswd", strings.TrimSpace(r.Stdout)+"\n")
	addr := FreeAddr(t)
	WriteFile(t, dir, "config.yml", fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: hangar-e2e-secret
auth:
  htpasswd:
    realm: hangar-e2e
    path: %s
`, filepath.Join(dir, "data"), addr, filepath.Join(dir, "htpasswd")))
	p := Start(t, "docker-registry", nil, bin, "serve", filepath.Join(dir, "config.yml"))
	// Ready when /v2/ asks for credentials.
	client := &http.Client{Timeout: 2 * time.Second}
	p.waitFor(time.Minute, "GET /v2/ = 401", func() bool {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
	return &Registry{Addr: addr, User: user, Password: password}
}

// Push logs in with a fresh DOCKER_CONFIG directory, tags local as
// ADDR/repo, pushes it, and removes the tag again so that the engine no
// longer has the image under that name. It returns the pushed image name and
// the DOCKER_CONFIG directory (its config.json holds the credentials).
func (r *Registry) Push(t testing.TB, local, repo string) (image, configDir string) {
	t.Helper()
	configDir = t.TempDir()
	env := []string{"DOCKER_CONFIG=" + configDir}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	login := exec.CommandContext(ctx, "docker", "login", "--username", r.User, "--password-stdin", r.Addr)
	login.Env = append(os.Environ(), env...)
	login.Stdin = strings.NewReader(r.Password)
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("docker login %s: %v\n%s", r.Addr, err, out)
	}
	cfg, err := os.ReadFile(filepath.Join(configDir, "config.json"))
	if err != nil || !strings.Contains(string(cfg), `"auth"`) {
		t.Fatalf("docker login %s did not store the credentials in %s/config.json (a credential helper?): %v %s", r.Addr, configDir, err, cfg)
	}
	image = r.Addr + "/" + repo
	MustDocker(t, "tag", local, image)
	t.Cleanup(func() { Docker(t, "image", "rm", image) })
	if res := DockerEnv(t, env, "push", image); res.Code != 0 {
		t.Fatalf("docker push %s: %s", image, res)
	}
	MustDocker(t, "image", "rm", image)
	if Docker(t, "image", "inspect", image).Code == 0 {
		t.Fatalf("%s is still present after docker image rm", image)
	}
	return image, configDir
}
