package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Service is one service binary with a fixed environment (addresses, state
// directories): started, and started again on the same addresses and state
// as a service manager would after a stop or a crash. Each start is a new
// Process, named Name the first time and Name-restart-N after; the current
// one is stopped (SIGTERM, then SIGKILL) in t.Cleanup like any Process.
type Service struct {
	Name string
	Bin  string
	Args []string
	Env  []string
	// ReadyURL, when set, is a URL (a debug port's /readyz) that answers 200
	// once the service is ready: Start waits for it.
	ReadyURL string

	mu     sync.Mutex
	starts int
	proc   *Process
}

// Start starts the service (again) and waits until it is ready. The previous
// process, if any, must have exited: a service is not run twice at once.
func (s *Service) Start(t testing.TB) *Process {
	t.Helper()
	s.mu.Lock()
	prev := s.proc
	s.starts++
	name := s.Name
	if s.starts > 1 {
		name += "-restart-" + itoa(s.starts-1)
	}
	s.mu.Unlock()
	if prev != nil {
		select {
		case <-prev.Done():
		default:
			t.Fatalf("harness: %s started again while still running (stop or kill it first)", s.Name)
		}
	}
	p := Start(t, name, s.Env, s.Bin, s.Args...)
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if s.ReadyURL != "" {
		p.WaitHTTP200(s.ReadyURL, 2*time.Minute)
	}
	return p
}

// Current is the process of the last start (nil before the first).
func (s *Service) Current() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Starts is how many times the service was started.
func (s *Service) Starts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// Logship is logship on fixed loopback ports and spool directory. Process is
// the current process (set by Start).
type Logship struct {
	*Process
	Service                       *Service
	GRPCAddr, DebugAddr, SpoolDir string
}

// NewLogship configures logship on free loopback ports with its own spool
// directory, writing to s3; extra entries (KEY=VALUE) are appended to its
// environment. It does not start it: see Start.
func NewLogship(t testing.TB, bin string, s3 *S3, extra ...string) *Logship {
	t.Helper()
	l := &Logship{GRPCAddr: FreeAddr(t), DebugAddr: FreeAddr(t), SpoolDir: t.TempDir()}
	env := append([]string{
		"HANGAR_LOGSHIP_GRPC_ADDR=" + l.GRPCAddr,
		"HANGAR_LOGSHIP_DEBUG_ADDR=" + l.DebugAddr,
		"HANGAR_LOGSHIP_SPOOL_DIR=" + l.SpoolDir,
	}, s3.Env()...)
	l.Service = &Service{Name: "logship", Bin: bin, Env: append(env, extra...), ReadyURL: "http://" + l.DebugAddr + "/readyz"}
	return l
}

// Start starts logship (again, on the same ports and spool) and waits for its
// /readyz.
func (l *Logship) Start(t testing.TB) *Logship {
	t.Helper()
	l.Process = l.Service.Start(t)
	return l
}

// StartLogship is NewLogship(...).Start(t).
func StartLogship(t testing.TB, bin string, s3 *S3, extra ...string) *Logship {
	t.Helper()
	return NewLogship(t, bin, s3, extra...).Start(t)
}

// Executor is an executor with a fixed id, debug port and work directory.
// Process is the current process (set by Start).
type Executor struct {
	*Process
	Service                *Service
	ID, DebugAddr, WorkDir string
}

// NewExecutor configures an executor named id attached to the gateway at
// gwAddr, shipping logs to logshipAddr, with its own debug port and the work
// directory workDir ("" for a new one; the executor keeps its leases there,
// so that a restart with the same directory is the same executor); extra
// entries (KEY=VALUE) are appended to its environment. It does not start it:
// see Start.
func NewExecutor(t testing.TB, bin, id, workDir, gwAddr, logshipAddr string, extra ...string) *Executor {
	t.Helper()
	if workDir == "" {
		workDir = t.TempDir()
	}
	e := &Executor{ID: id, DebugAddr: FreeAddr(t), WorkDir: workDir}
	env := append([]string{
		"HANGAR_EXECUTOR_ID=" + id,
		"HANGAR_GATEWAY_ADDR=" + gwAddr,
		"HANGAR_LOGSHIP_ADDR=" + logshipAddr,
		"HANGAR_EXECUTOR_DEBUG_ADDR=" + e.DebugAddr,
		"HANGAR_EXECUTOR_WORK_DIR=" + workDir,
		"HANGAR_EXECUTOR_IO_DIR=" + IODir(t, workDir),
	}, extra...)
	e.Service = &Service{Name: "executor-" + id, Bin: bin, Env: env}
	return e
}

// Start starts the executor (again, as the same executor). It does not wait:
// see the gateway's heartbeats for when it is attached. In t.Cleanup it is
// stopped as an operator would: see Shutdown.
func (e *Executor) Start(t testing.TB) *Executor {
	t.Helper()
	p := e.Service.Start(t)
	e.Process = p
	t.Cleanup(func() { shutdownExecutor(p) })
	return e
}

// StartExecutor is NewExecutor(t, bin, id, "", ...).Start(t).
func StartExecutor(t testing.TB, bin, id, gwAddr, logshipAddr string, extra ...string) *Executor {
	t.Helper()
	return NewExecutor(t, bin, id, "", gwAddr, logshipAddr, extra...).Start(t)
}

// Shutdown stops the current executor process: SIGTERM (drain), after 30s a
// second SIGTERM (cancel the runs), after 60s more SIGKILL. It returns once
// it has exited.
func (e *Executor) Shutdown() { shutdownExecutor(e.Process) }

func shutdownExecutor(p *Process) {
	for _, grace := range []time.Duration{30 * time.Second, 60 * time.Second} {
		select {
		case <-p.Done():
			return
		default:
		}
		_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
		select {
		case <-p.Done():
			return
		case <-time.After(grace):
		}
	}
	p.Kill()
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
