package dockerrt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// startRegistry runs Debian's docker-registry on a free loopback port with
// htpasswd (bcrypt) basic auth for user:password, and returns its address.
func startRegistry(t *testing.T, user, password string) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("the private registry test needs Debian's docker-registry (apt-get install -y docker-registry): %v", err)
	}
	htpasswdBin, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Fatalf("the private registry test needs htpasswd (apt-get install -y apache2-utils): %v", err)
	}
	dir := t.TempDir()
	entry, err := exec.Command(htpasswdBin, "-Bbn", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	writeFile(t, filepath.Join(dir, "htpasswd"), strings.TrimSpace(string(entry))+"\n", 0o600)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: hangar-test-secret
auth:
  htpasswd:
    realm: hangar-test
    path: %s
`, filepath.Join(dir, "data"), addr, filepath.Join(dir, "htpasswd"))
	writeFile(t, filepath.Join(dir, "config.yml"), config, 0o600)

	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("docker-registry log:\n%s", b)
		}
	})

	// Ready when /v2/ asks for credentials.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return addr
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("docker-registry exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry on %s not ready: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dockerConfigDir writes a config.json with credentials for host.
func dockerConfigDir(t *testing.T, host, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))},
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "config.json"), string(b), 0o600)
	return dir
}

func TestRunPullsFromPrivateRegistry(t *testing.T) {
	t.Parallel()
	const user, password = "hangar", "s3cret-Pa55"
	addr := startRegistry(t, user, password)
	cli := engine(t)
	ctx := context.Background()

	image := addr + "/hangar/private:1"
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: testImage, Target: image}); err != nil {
		t.Fatal(err)
	}
	removeImage := func() {
		if _, err := cli.ImageRemove(ctx, image, client.ImageRemoveOptions{}); err != nil {
			t.Errorf("remove %s: %v", image, err)
		}
	}
	auth, err := authconfig.Encode(registry.AuthConfig{Username: user, Password: password, ServerAddress: addr})
	if err != nil {
		t.Fatal(err)
	}
	push, err := cli.ImagePush(ctx, image, client.ImagePushOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	err = push.Wait(ctx)
	push.Close()
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	removeImage()

	tests := []struct {
		name       string
		configDir  string
		wantPulled bool
	}{
		{"no credentials", "", false},
		{"credentials of another registry", dockerConfigDir(t, "registry.example.com", user, password), false},
		{"wrong password", dockerConfigDir(t, addr, user, "wrong-password"), false},
		{"credentials", dockerConfigDir(t, addr, user, password), true},
		{"credentials keyed by URL", dockerConfigDir(t, "http://"+addr+"/v2/", user, password), true},
	}
	// Sequential: each case starts with the image absent.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, cli, Options{DockerConfigDir: tc.configDir})
			tj := newJob(phase("plan", "echo pulled-and-ran"))
			tj.Spec.RunnerImage = image
			res := runJob(t, rt, tj)
			if tc.wantPulled {
				wantFinished(t, res, tj)
				if tj.stdout.String() != "pulled-and-ran\n" {
					t.Errorf("stdout %q", tj.stdout)
				}
				removeImage()
				return
			}
			if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || res.ExitCode != -1 || !strings.HasPrefix(res.Reason, "pull image "+image+": ") {
				t.Errorf("result = %+v, want FAILED with reason \"pull image %s: ...\"", res, image)
			}
			t.Logf("reason: %s", res.Reason)
			if strings.Contains(res.Reason, password) || strings.Contains(res.Reason, "wrong-password") {
				t.Errorf("reason holds a password: %q", res.Reason)
			}
			if len(tj.startedPhases()) != 0 {
				t.Errorf("phases started: %v", tj.startedPhases())
			}
		})
	}
}

func TestRunPullFailureOfMissingImage(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, engine(t), Options{})
	// Nothing listens on port 1 of loopback.
	tj := newJob(phase("plan", "echo never"))
	tj.Spec.RunnerImage = "127.0.0.1:1/hangar/absent:1"
	res := runJob(t, rt, tj)
	if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || !strings.HasPrefix(res.Reason, "pull image 127.0.0.1:1/hangar/absent:1: ") {
		t.Errorf("result = %+v", res)
	}
}

func TestRegistryAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := `{
  "auths": {
    "https://index.docker.io/v1/": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("hubuser:hubpass")) + `"},
    "registry.example.com:5000": {"username": "u2", "password": "p:2"},
    "ghcr.io": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("gh:tok:with:colons")) + `"}
  },
  "credsStore": "desktop"
}`
	writeFile(t, filepath.Join(dir, "config.json"), cfg, 0o600)
	tests := []struct {
		image, wantUser, wantPassword, wantServer string
	}{
		{"alpine:3", "hubuser", "hubpass", "https://index.docker.io/v1/"},
		{"docker.io/library/alpine", "hubuser", "hubpass", "https://index.docker.io/v1/"},
		{"registry.example.com:5000/team/runner:1", "u2", "p:2", "registry.example.com:5000"},
		{"ghcr.io/acme/runner@sha256:" + strings.Repeat("a", 64), "gh", "tok:with:colons", "ghcr.io"},
		{"registry.example.com/team/runner:1", "", "", ""},
	}
	for _, tc := range tests {
		got, err := registryAuth(dir, tc.image)
		if err != nil {
			t.Fatalf("%s: %v", tc.image, err)
		}
		if tc.wantUser == "" {
			if got != "" {
				t.Errorf("%s: auth %q, want none", tc.image, got)
			}
			continue
		}
		ac, err := authconfig.Decode(got)
		if err != nil {
			t.Fatalf("%s: %v", tc.image, err)
		}
		if ac.Username != tc.wantUser || ac.Password != tc.wantPassword || ac.ServerAddress != tc.wantServer {
			t.Errorf("%s: auth %+v", tc.image, ac)
		}
	}
	if got, err := registryAuth("", "alpine"); got != "" || err != nil {
		t.Errorf("no config dir: %q, %v", got, err)
	}
	if err := os.Remove(filepath.Join(dir, "config.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := registryAuth(dir, "alpine"); err == nil {
		t.Error("missing config.json: no error")
	}
}
