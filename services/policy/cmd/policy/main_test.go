package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
	buildDir  string
)

// build compiles the real binary once for every test of this package.
func build(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "hangar-policy-test")
		if buildErr != nil {
			return
		}
		binary = filepath.Join(buildDir, "policy")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// command runs the binary with exactly env (plus PATH) as its environment.
func command(t *testing.T, env ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(build(t))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	return cmd, &stderr
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var exit *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &exit) {
		t.Fatalf("run: %v", err)
	}
	return exit.ExitCode()
}

func TestInvalidPolicyExits(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   string // regexp; FILE stands for the policy's path
	}{
		{
			name:   "parse error",
			policy: "package hangar.initialization\n\ndeny contains msg if {\n\tmsg := \"unterminated\n}\n",
			want:   `FILE:\d+: rego_parse_error: `,
		},
		{
			name:   "compile error",
			policy: "package hangar.initialization\n\ndeny contains msg if {\n\tinput.run.type == \"TASK\"\n}\n",
			want:   `FILE:3: rego_unsafe_var_error: var msg is unsafe`,
		},
		{
			name:   "wrong package",
			policy: "package main\n\ndeny contains \"x\" if true\n",
			want:   `FILE:1: hangar_policy_error: package must be hangar.initialization, got main`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy.rego")
			if err := os.WriteFile(path, []byte(tt.policy), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd, stderr := command(t,
				"HANGAR_RUN_INITIALIZATION_POLICY="+path,
				"HANGAR_POLICY_GRPC_ADDR=127.0.0.1:0",
				"HANGAR_POLICY_DEBUG_ADDR=127.0.0.1:0",
			)
			err := runWithTimeout(t, cmd)
			if code := exitCode(t, err); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			want := strings.ReplaceAll(tt.want, "FILE", regexp.QuoteMeta(path))
			if !regexp.MustCompile(want).MatchString(stderr.String()) {
				t.Errorf("stderr:\n%s\nwant match of %s", stderr, want)
			}
			if strings.Contains(stderr.String(), `"msg":"serving"`) {
				t.Error("the service started serving")
			}
		})
	}
}

func TestConfigErrorExits(t *testing.T) {
	cmd, stderr := command(t, "HANGAR_LOG_LEVEL=loud", "HANGAR_POLICY_GRPC_ADDR=nowhere")
	err := runWithTimeout(t, cmd)
	if code := exitCode(t, err); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	for _, name := range []string{"HANGAR_LOG_LEVEL", "HANGAR_POLICY_GRPC_ADDR"} {
		if !strings.Contains(stderr.String(), name) {
			t.Errorf("stderr does not name %s:\n%s", name, stderr)
		}
	}
}

func runWithTimeout(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the binary did not exit")
		return nil
	}
}

// TestServesAndStopsOnSIGTERM starts the binary with a valid policy, asks it
// for a decision, and stops it with SIGTERM.
func TestServesAndStopsOnSIGTERM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.rego")
	src := "package hangar.initialization\n\ndeny contains \"frozen\" if \"frozen\" in input.stack.labels\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(build(t))
	cmd.Env = []string{
		"HANGAR_RUN_INITIALIZATION_POLICY=" + path,
		"HANGAR_POLICY_GRPC_ADDR=127.0.0.1:0",
		"HANGAR_POLICY_DEBUG_ADDR=127.0.0.1:0",
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()

	// Read the JSON log until the "serving" line gives the gRPC address.
	addr := make(chan string, 1)
	var logs safeLines
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.add(sc.Text())
			var rec struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving" {
				addr <- rec.GRPCAddr
			}
		}
	}()
	var grpcAddr string
	select {
	case grpcAddr = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatalf("no serving line; log:\n%s", logs.String())
	}

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := policyv1.NewPolicyServiceClient(conn).Evaluate(ctx, &policyv1.EvaluateRequest{
		Run:   &policyv1.RunInput{Id: "r1"},
		Stack: &policyv1.StackInput{Labels: []string{"frozen"}},
	})
	if err != nil || resp.GetAllowed() || strings.Join(resp.GetDeny(), ",") != "frozen" {
		t.Fatalf("Evaluate() = %v, %v", resp, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Read stderr to its end before Wait closes it (os/exec's rule for pipes).
	select {
	case <-readDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the binary did not stop after SIGTERM")
	}
	if code := exitCode(t, runWait(t, cmd)); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0; log:\n%s", code, logs.String())
	}
}

func runWait(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the binary did not stop after SIGTERM")
		return nil
	}
}

type safeLines struct {
	mu    sync.Mutex
	lines []string
}

func (s *safeLines) add(l string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, l)
}

func (s *safeLines) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}
