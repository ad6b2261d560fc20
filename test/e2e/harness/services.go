package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Logship is a running logship.
type Logship struct {
	*Process
	GRPCAddr, DebugAddr, SpoolDir string
}

// StartLogship runs logship on free loopback ports, writing to s3, and waits
// for its /readyz.
func StartLogship(t testing.TB, bin string, s3 *S3, extra ...string) *Logship {
	t.Helper()
	l := &Logship{GRPCAddr: FreeAddr(t), DebugAddr: FreeAddr(t), SpoolDir: t.TempDir()}
	env := append([]string{
		"HANGAR_LOGSHIP_GRPC_ADDR=" + l.GRPCAddr,
		"HANGAR_LOGSHIP_DEBUG_ADDR=" + l.DebugAddr,
		"HANGAR_LOGSHIP_SPOOL_DIR=" + l.SpoolDir,
	}, s3.Env()...)
	l.Process = Start(t, "logship", append(env, extra...), bin)
	l.WaitHTTP200("http://"+l.DebugAddr+"/readyz", 2*time.Minute)
	return l
}

// Executor is a running executor.
type Executor struct {
	*Process
	ID, DebugAddr, WorkDir string
}

// StartExecutor runs an executor named id attached to the gateway at gwAddr,
// shipping logs to logshipAddr, with its own work directory and debug port;
// extra entries (KEY=VALUE) are appended to its environment. It does not wait:
// see the gateway's heartbeats for when it is attached. In t.Cleanup it is
// stopped as an operator would: SIGTERM (drain), a second SIGTERM (cancel the
// runs) if it is still busy after 30s, and SIGKILL as the last resort.
func StartExecutor(t testing.TB, bin, id, gwAddr, logshipAddr string, extra ...string) *Executor {
	t.Helper()
	e := &Executor{ID: id, DebugAddr: FreeAddr(t), WorkDir: t.TempDir()}
	env := append([]string{
		"HANGAR_EXECUTOR_ID=" + id,
		"HANGAR_GATEWAY_ADDR=" + gwAddr,
		"HANGAR_LOGSHIP_ADDR=" + logshipAddr,
		"HANGAR_EXECUTOR_DEBUG_ADDR=" + e.DebugAddr,
		"HANGAR_EXECUTOR_WORK_DIR=" + e.WorkDir,
		"HANGAR_EXECUTOR_IO_DIR=" + IODir(t, e.WorkDir),
	}, extra...)
	e.Process = Start(t, "executor-"+id, env, bin)
	t.Cleanup(e.Shutdown)
	return e
}

// Shutdown stops the executor: SIGTERM (drain), after 30s a second SIGTERM
// (cancel the runs), after 60s more SIGKILL. It returns once it has exited.
func (e *Executor) Shutdown() {
	for _, grace := range []time.Duration{30 * time.Second, 60 * time.Second} {
		select {
		case <-e.Done():
			return
		default:
		}
		_ = syscall.Kill(e.Pid(), syscall.SIGTERM)
		select {
		case <-e.Done():
			return
		case <-time.After(grace):
		}
	}
	e.Kill()
}

// Workspaces lists the run workspaces (directories, "hangar-ws-*") left in
// the executor's work directory. Files of the executor's own state (e.g. its
// leases) are not workspaces.
func (e *Executor) Workspaces(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(e.WorkDir)
	if err != nil {
		t.Fatalf("read %s: %v", e.WorkDir, err)
	}
	var names []string
	for _, en := range entries {
		// The executor's own state: what it keeps to re-adopt runs.
		if strings.HasPrefix(en.Name(), "hangar-executor-") {
			continue
		}
		if en.IsDir() || strings.HasPrefix(en.Name(), "hangar-ws-") {
			names = append(names, filepath.Join(e.WorkDir, en.Name()))
		}
	}
	return names
}

// RunSpec is a run spec in its JSON form (docs/RUNSPEC.md).
type RunSpec struct {
	Type               string   `json:"type"`
	Stack              Stack    `json:"stack"`
	Commit             *Commit  `json:"commit,omitempty"`
	Source             *Source  `json:"source,omitempty"`
	RunnerImage        string   `json:"runner_image"`
	Env                []EnvVar `json:"env,omitempty"`
	Phases             []Phase  `json:"phases"`
	TimeoutSeconds     int      `json:"timeout_seconds,omitempty"`
	LogsTimeoutSeconds int      `json:"logs_timeout_seconds,omitempty"`
}

// Stack is a run spec's stack.
type Stack struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Labels []string `json:"labels,omitempty"`
}

// Commit is a run spec's commit.
type Commit struct {
	SHA     string `json:"sha"`
	Branch  string `json:"branch"`
	Message string `json:"message"`
	Author  string `json:"author"`
}

// Source is a run spec's source.
type Source struct {
	URL         string `json:"url"`
	Ref         string `json:"ref,omitempty"`
	ProjectRoot string `json:"project_root,omitempty"`
}

// EnvVar is a variable of a run.
type EnvVar struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Secret bool   `json:"secret,omitempty"`
}

// Phase is a phase of a run.
type Phase struct {
	Name     string   `json:"name"`
	Before   []string `json:"before,omitempty"`
	Commands []string `json:"commands,omitempty"`
	After    []string `json:"after,omitempty"`
}

// Task is a RUN_TYPE_TASK spec running commands in its perform phase.
func Task(image string, commands ...string) *RunSpec {
	return &RunSpec{
		Type:        "RUN_TYPE_TASK",
		Stack:       Stack{ID: "stack-e2e", Name: "E2E", Labels: []string{"team:e2e"}},
		Commit:      &Commit{SHA: "0000000000000000000000000000000000000000", Branch: "main", Message: "e2e", Author: "hangar-e2e"},
		RunnerImage: image,
		Phases:      []Phase{{Name: "perform", Commands: commands}},
	}
}

// JSON is the spec's JSON.
func (s *RunSpec) JSON() string {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b)
}

// IODir returns the executor I/O directory (relay sockets) for a work
// directory: a short path (unix socket paths are limited), the same for the
// same work directory so that a restarted executor finds its runs' sockets,
// removed at the end of the test.
func IODir(t testing.TB, workDir string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(workDir))
	dir := filepath.Join(os.TempDir(), "hio-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("executor I/O dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
