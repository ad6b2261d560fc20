package e2e

// TestCompose starts deploy/compose/docker-compose.yml the way an operator does
// (the default profile: Hangar's own images only, which is what machines with
// no registry access can run), with two executors, and sends a run through it
// with the hangarctl container. It needs Docker, docker compose (v2) or
// docker-compose (v1), the Go toolchain (scripts/images.sh builds the images
// from the working tree) and a static busybox (the runner image is imported
// from it, nothing is pulled).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/test/e2e/harness"
)

const (
	// composeImageTag tags the images this test builds (not :dev, which is
	// the operator's); they are removed at the end.
	composeImageTag = "compose-e2e"
	// composeRunnerImage is the runner image of the test's run: static busybox.
	composeRunnerImage = "hangar-e2e/compose-busybox:latest"
	composeSecret      = "c0mp0se-Secret-7Hq2Lx9w"
	composeMask        = "******"
)

var composeImages = []string{"gateway", "policy", "executor", "logship", "hangarctl"}

// composeStack is one compose project started by the test.
type composeStack struct {
	t       *testing.T
	root    string   // repository root
	cmd     []string // "docker compose" or "docker-compose"
	project string
	env     []string
}

func TestCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and starts the compose stack")
	}
	start := time.Now()
	t.Cleanup(func() { t.Logf("TestCompose took %s", time.Since(start).Round(time.Second)) })

	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("TestCompose needs a reachable Docker engine: docker info: %v\n%s", err, out)
	}
	root := composeRepoRoot(t)
	s := &composeStack{t: t, root: root, cmd: composeCommand(t)}
	t.Logf("compose command: %s", strings.Join(s.cmd, " "))

	// 1. Images: Hangar's from the working tree, the runner from busybox.
	// Five static Go builds and five image builds: about a minute on an idle
	// host with a warm build cache, but a cold cache on a loaded host took
	// more than 8 minutes once (a CI run killed them at 8), so the bound is
	// generous: it is there to stop a hang, not to judge speed.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, filepath.Join(root, "scripts", "images.sh"))
	build.Dir = root
	build.Env = append(os.Environ(), "HANGAR_IMAGE_TAG="+composeImageTag)
	t0 := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/images.sh: %v\n%s", err, out)
	}
	t.Logf("images built in %s", time.Since(t0).Round(time.Second))
	t.Cleanup(func() {
		for _, n := range composeImages {
			_ = exec.Command("docker", "rmi", "-f", "hangar/"+n+":"+composeImageTag).Run()
		}
	})
	for _, n := range composeImages {
		composeCheckImage(t, "hangar/"+n+":"+composeImageTag)
	}
	harness.BusyboxImage(t, composeRunnerImage)

	// 2. The stack: default profile, two executors, non-root executors with
	// the socket's group.
	s.project = "hangar-e2e-" + composeRandom(4)
	var sock syscall.Stat_t
	if err := syscall.Stat("/var/run/docker.sock", &sock); err != nil {
		t.Fatalf("stat the Docker socket: %v", err)
	}
	s.env = composeEnv(map[string]string{
		"HANGAR_IMAGE_TAG":     composeImageTag,
		"HANGAR_BROKER_PORT":   strconv.Itoa(composeFreePort(t)),
		"HANGAR_S3_PORT":       strconv.Itoa(composeFreePort(t)),
		"HANGAR_EXECUTOR_USER": "65532:65532",
		"HANGAR_DOCKER_GID":    strconv.Itoa(int(sock.Gid)),
		"HANGAR_OTLP_ENDPOINT": "",
		"COMPOSE_PROFILES":     "",
		"COMPOSE_FILE":         "",
		"COMPOSE_PROJECT_NAME": "",
	})
	t.Cleanup(s.down)
	t0 = time.Now()
	if out, err := s.compose(3*time.Minute, "up", "-d", "--scale", "executor=2"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	t.Logf("compose up in %s", time.Since(t0).Round(time.Second))

	// setup ran once and succeeded (up waited for it: the gateway depends on it)
	if code := s.exitCode("setup"); code != "0" {
		t.Fatalf("setup exit code %q, want 0", code)
	}

	// 3. Both executors attached: the gateway's hangar_executor_slots has two
	// executor labels, the executors' host names.
	execIDs := s.containerHostnames("executor")
	if len(execIDs) != 2 {
		t.Fatalf("executor containers: %v, want 2", execIDs)
	}
	slotsRE := regexp.MustCompile(`(?m)^hangar_executor_slots\{executor="([^"]+)"\} (\d+)`)
	var metrics string
	deadline := time.Now().Add(90 * time.Second)
	for {
		metrics = s.fetch("http://gateway:9300/metrics")
		got := map[string]bool{}
		for _, m := range slotsRE.FindAllStringSubmatch(metrics, -1) {
			got[m[1]] = true
		}
		if len(got) == 2 && got[execIDs[0]] && got[execIDs[1]] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway does not list both executors %v after 90s; hangar_executor_slots:\n%s", execIDs, composeGrep(metrics, "hangar_executor_slots"))
		}
		time.Sleep(time.Second)
	}
	t.Logf("executors attached: %v", execIDs)

	// 4. A run printing a secret, submitted and followed with the hangarctl
	// container.
	specDir := t.TempDir()
	runID := "compose-" + composeRandom(6)
	spec := fmt.Sprintf(`{
  "type": "RUN_TYPE_TASK",
  "stack": {"id": "stack-compose", "name": "compose", "labels": ["team:e2e"]},
  "commit": {"sha": "0000000000000000000000000000000000000000", "branch": "main", "message": "compose e2e", "author": "e2e"},
  "runner_image": %q,
  "env": [
    {"name": "GREETING", "value": "hello from compose"},
    {"name": "API_TOKEN", "value": %q, "secret": true}
  ],
  "phases": [
    {"name": "init", "commands": ["echo \"$GREETING\""]},
    {"name": "perform", "commands": ["echo \"token=$API_TOKEN\"", "echo done"]}
  ]
}`, composeRunnerImage, composeSecret)
	if err := os.WriteFile(filepath.Join(specDir, "run.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	// the hangarctl container runs as 65532
	if err := os.Chmod(specDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	out, err := s.compose(3*time.Minute, "run", "--rm", "-T", "-v", specDir+":/spec:ro", "hangarctl",
		"run", "submit", "--dir=/state/control-plane", "--pool=default", "--spec=/spec/run.json",
		"--run-id="+runID, "--follow", "--logship=logship:7302", "--timeout=2m")
	if err != nil {
		t.Fatalf("hangarctl run submit --follow: %v\n%s", err, out)
	}
	t.Logf("run %s followed to its end in %s", runID, time.Since(t0).Round(time.Second))
	for _, want := range []string{"finished (exit code 0)", "hello from compose", "token=" + composeMask, "log stored at s3 key runs/" + runID + "/log"} {
		if !strings.Contains(out, want) {
			t.Errorf("the followed run lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, composeSecret) {
		t.Errorf("the followed log shows the secret:\n%s", out)
	}
	startedRE := regexp.MustCompile(`started on executor (\S+)`)
	if m := startedRE.FindStringSubmatch(out); m == nil || (m[1] != execIDs[0] && m[1] != execIDs[1]) {
		t.Errorf("the run did not start on one of the executors %v:\n%s", execIDs, out)
	}

	// 5. The final object is in S3, masked, and matches its recorded size and checksum.
	out, err = s.compose(time.Minute, "run", "--rm", "-T", "hangarctl", "logs", "--dir=/state/control-plane", "--verify", runID)
	if err != nil {
		t.Fatalf("hangarctl logs --verify: %v\n%s", err, out)
	}
	for _, want := range []string{"verified:", "token=" + composeMask, "hello from compose", "done"} {
		if !strings.Contains(out, want) {
			t.Errorf("the stored log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, composeSecret) {
		t.Errorf("the stored log shows the secret:\n%s", out)
	}

	// 6. The run's containers and workspace volume are gone.
	deadline = time.Now().Add(30 * time.Second)
	for {
		left := composeDocker(t, "ps", "-aq", "--filter", "label=hangar.managed=true", "--filter", "label=hangar.run-id="+runID)
		vols := composeDocker(t, "volume", "ls", "-q", "--filter", "label=hangar.run-id="+runID)
		if left == "" && vols == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s left containers %q and volumes %q", runID, left, vols)
		}
		time.Sleep(time.Second)
	}

	// 7. The gateway counted the run as finished.
	metrics = s.fetch("http://gateway:9300/metrics")
	if !regexp.MustCompile(`(?m)^hangar_runs_finished_total\{outcome="finished"\} [1-9]`).MatchString(metrics) {
		t.Errorf("hangar_runs_finished_total{outcome=\"finished\"} is not 1 or more:\n%s", composeGrep(metrics, "hangar_runs_finished_total"))
	}

	// 8. The pool's services refuse a container without a pool certificate on
	// the stack's network (what a run container or any other neighbour is):
	// Attach, Ship into the run, Tail and Evaluate, in plaintext and in TLS.
	attackDir := buildAttacker(t)
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer acancel()
	aout, err := exec.CommandContext(actx, "docker", "run", "--rm", "--network", s.project+"_default",
		"-v", attackDir+":/attack:ro", "-e", "ATTACK_HOSTS=gateway,logship,policy", "-e", "ATTACK_PORTS=7300,7301,7302",
		"-e", "ATTACK_RUN_ID="+runID, composeRunnerImage, "/attack/attacker").CombinedOutput()
	if err != nil {
		t.Fatalf("the attacker container: %v\n%s", err, aout)
	}
	refused := regexp.MustCompile(`(?m)^ATTACK (gateway|logship|policy):\S+ \S+ \S+ refused: `).FindAllString(string(aout), -1)
	if strings.Contains(string(aout), "ACCEPTED") || !strings.Contains(string(aout), "ATTACK done") || len(refused) != 3*3*2*4 {
		t.Errorf("the compose services did not refuse every attempt (%d refusals of %d):\n%s", len(refused), 3*3*2*4, aout)
	}
	if strings.Contains(string(aout), composeSecret) {
		t.Error("the attacker saw the run's secret")
	}
}

// compose runs the compose command on the stack's file and project.
func (s *composeStack) compose(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append(append([]string{}, s.cmd[1:]...), "-p", s.project, "-f", filepath.Join(s.root, "deploy", "compose", "docker-compose.yml"))
	full = append(full, args...)
	c := exec.CommandContext(ctx, s.cmd[0], full...)
	c.Dir = s.root
	c.Env = s.env
	var buf bytes.Buffer
	c.Stdout, c.Stderr = &buf, &buf
	err := c.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s", s.cmd[0], strings.Join(full, " "), timeout)
	}
	return buf.String(), err
}

// down removes the stack and its volumes, and checks that nothing of the
// project is left.
func (s *composeStack) down() {
	t := s.t
	if t.Failed() {
		if out, _ := s.compose(time.Minute, "logs", "--no-color", "--tail=60"); out != "" {
			t.Logf("compose logs:\n%s", out)
		}
	}
	if out, err := s.compose(2*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "30"); err != nil {
		t.Errorf("compose down -v: %v\n%s", err, out)
	}
	if left := composeDocker(t, "ps", "-aq", "--filter", "label=com.docker.compose.project="+s.project); left != "" {
		t.Errorf("compose down left containers: %s", left)
	}
	if left := composeDocker(t, "volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+s.project); left != "" {
		t.Errorf("compose down left volumes: %s", left)
	}
}

// containerIDs returns the ids of a service's containers.
func (s *composeStack) containerIDs(service string) []string {
	return strings.Fields(composeDocker(s.t, "ps", "-aq", "--no-trunc",
		"--filter", "label=com.docker.compose.project="+s.project,
		"--filter", "label=com.docker.compose.service="+service))
}

func (s *composeStack) exitCode(service string) string {
	ids := s.containerIDs(service)
	if len(ids) != 1 {
		s.t.Fatalf("%s containers: %v, want 1", service, ids)
	}
	return composeDocker(s.t, "inspect", "-f", "{{.State.ExitCode}}", ids[0])
}

// containerHostnames returns the host names of a service's containers, which
// are the executors' ids.
func (s *composeStack) containerHostnames(service string) []string {
	var names []string
	for _, id := range s.containerIDs(service) {
		names = append(names, composeDocker(s.t, "inspect", "-f", "{{.Config.Hostname}}", id))
	}
	return names
}

// fetch GETs url from inside the stack's network (the services publish no
// debug port), with the busybox image's wget.
func (s *composeStack) fetch(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", s.project+"_default",
		composeRunnerImage, "wget", "-q", "-O", "-", url).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("fetch %s: %v: %s", url, err, out)
	}
	return string(out)
}

// composeCommand is `docker compose` when the Docker CLI has the plugin, else
// docker-compose.
func composeCommand(t *testing.T) []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	t.Fatal("neither `docker compose` nor docker-compose works: apt-get install docker-compose (or install the Docker Compose v2 plugin)")
	return nil
}

// composeRepoRoot walks up from the working directory to the go.work file.
func composeRepoRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "deploy", "compose", "docker-compose.yml")); err == nil {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root (go.work and deploy/compose) not found above the working directory")
		}
		dir = parent
	}
}

// composeEnv is the test's environment with these variables set (an empty
// value unsets the variable, so the operator's shell does not leak in).
func composeEnv(set map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func composeDocker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func composeCheckImage(t *testing.T, image string) {
	t.Helper()
	user := composeDocker(t, "image", "inspect", "-f", "{{.Config.User}}", image)
	if user != "65532:65532" {
		t.Errorf("image %s runs as %q, want 65532:65532", image, user)
	}
}

// composeFreePort is a port for the compose stack to publish, drawn as
// harness.FreeAddr draws them (not from the ephemeral range).
func composeFreePort(t *testing.T) int {
	t.Helper()
	port, err := strconv.Atoi(harness.Port(harness.FreeAddr(t)))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func composeRandom(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func composeGrep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
