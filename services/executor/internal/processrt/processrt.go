// Package processrt is the executor's `process` runtime: it runs each phase of a
// run as a local `/bin/sh -c` process on the executor's host, in the run's
// workspace.
//
// There is no isolation. The run has the executor's user, its file system and its
// network; a run can read whatever the executor can read. This runtime is for
// hosts without Docker and for the one-machine demo, never for runs whose code you
// do not trust.
//
// What a phase process sees:
//   - its working directory is Job.Workspace/<spec.source.project_root>;
//   - its environment is exactly Job.Env. The only variable taken from the
//     executor's own environment is PATH, and only when Job.Env has none, so that
//     the commands can be found; HOME, USER and the rest are not passed on
//     (the shell itself may add PWD);
//   - stdin is /dev/null; stdout and stderr are one pipe whose output goes to
//     the output's Stdout, in the order written, like a terminal (ADR 0020);
//     with Runtime.SeparateStderr they are two pipes, to Stdout and Stderr;
//   - it leads its own process group, so that everything it starts can be stopped.
//
// When the job's context ends, the whole process group gets SIGTERM; the runtime
// waits until the group is gone or Job.StopGrace has passed, then sends SIGKILL to
// the group. Processes a phase leaves behind when it ends normally are killed
// (SIGKILL) before the next phase starts: every phase starts with nothing of the
// previous one running, and RunPhase returns only once the group is gone.
package processrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/wsarchive"
)

// Shell runs each phase script as `Shell -c script`.
const Shell = "/bin/sh"

const (
	// pollInterval is how often the runtime checks whether a stopped process
	// group is gone.
	pollInterval = 20 * time.Millisecond
	// killWait bounds the wait for a killed group to disappear (SIGKILL cannot
	// be caught; this only covers processes stuck in the kernel).
	killWait = 5 * time.Second
	// outputWait bounds the wait for the output pipes to close once the group is
	// gone: a process that left the group (setsid) may still hold them.
	outputWait = 2 * time.Second
)

// Runtime is the process runtime. The zero value is ready to use, and a Runtime
// may run any number of jobs at once. Its runs cannot be re-adopted: the
// phases are children of the executor and end with it.
type Runtime struct {
	// SeparateStderr gives each phase's stderr a pipe of its own, passed on
	// to the output's Stderr. By default fd 1 and fd 2 are one pipe whose
	// output goes to Stdout: only one channel keeps the order of the writes.
	SeparateStderr bool
}

var _ runner.Runtime = Runtime{}

// Open returns the session of a job: its phases run in
// Workspace/<project_root> with the job's environment (see the package
// documentation).
func (rt Runtime) Open(job *runner.Job) (runner.Session, error) {
	if job.Adopt != nil {
		return nil, errors.New("the process runtime cannot re-adopt a run")
	}
	dir, err := phaseDir(job)
	if err != nil {
		return nil, err
	}
	return &session{job: job, dir: dir, env: phaseEnv(job.Env), separate: rt.SeparateStderr}, nil
}

type session struct {
	job      *runner.Job
	dir      string
	env      []string
	separate bool
}

// Prepare has nothing to do: the workspace is the host directory.
func (s *session) Prepare(context.Context) error { return nil }

// RunPhase runs the phase's script as a process group and returns once the
// group is gone and its output has been passed on.
func (s *session) RunPhase(ctx context.Context, _ int, p *runv1.Phase, out runner.Output) (runner.Exit, error) {
	st, err := runPhase(ctx, s.job.StopGrace, out, runner.PhaseScript(p), s.dir, s.env, s.separate)
	if err != nil {
		return runner.Exit{Code: -1}, err
	}
	return runner.Exit{Code: st.code, Signal: st.signal, Stopped: st.stopped}, nil
}

// Export writes the workspace directory.
func (s *session) Export(_ context.Context, w io.Writer) error {
	return wsarchive.Write(w, s.job.Workspace)
}

// Close has nothing to remove: every phase's process group is gone when
// RunPhase returns.
func (s *session) Close() {}

// phaseDir returns Workspace/<project_root>, refusing a project_root that leaves
// the workspace.
func phaseDir(job *runner.Job) (string, error) {
	if job.Workspace == "" {
		return "", errors.New("job has no workspace")
	}
	root := job.Spec.GetSource().GetProjectRoot()
	if root != "" && !filepath.IsLocal(filepath.FromSlash(root)) {
		return "", fmt.Errorf("project_root %q is not a path inside the workspace", root)
	}
	dir := filepath.Join(job.Workspace, filepath.FromSlash(root))
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("project root: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("project root %q is not a directory", root)
	}
	return dir, nil
}

// phaseEnv returns job.Env, plus the executor's PATH when job.Env has no PATH.
// The result is never nil: a nil Env would make os/exec pass the executor's
// whole environment.
func phaseEnv(jobEnv []string) []string {
	env := make([]string, 0, len(jobEnv)+1)
	env = append(env, jobEnv...)
	for _, kv := range jobEnv {
		if strings.HasPrefix(kv, "PATH=") {
			return env
		}
	}
	if path, ok := os.LookupEnv("PATH"); ok {
		env = append(env, "PATH="+path)
	}
	return env
}

type phaseStatus struct {
	code    int            // exit code, 128+signal when killed by a signal
	signal  syscall.Signal // the signal that killed the shell, 0 if it exited
	stopped bool           // the job's context ended while the phase ran
}

// runPhase runs one phase script and returns once its process group is gone and
// its output has been passed on.
func runPhase(ctx context.Context, grace time.Duration, out runner.Output, script, dir string, env []string, separate bool) (phaseStatus, error) {
	// Own pipes rather than os/exec's: cmd.Wait then returns when the shell
	// exits, even if a process it left behind still holds the pipes, so that
	// the leftovers can be killed.
	outR, outW, err := os.Pipe()
	if err != nil {
		return phaseStatus{}, fmt.Errorf("stdout pipe: %w", err)
	}
	// One pipe for fd 1 and fd 2 unless told otherwise (ADR 0020).
	readers := []*os.File{outR}
	errW := outW
	if separate {
		var errR *os.File
		errR, errW, err = os.Pipe()
		if err != nil {
			closeAll(outR, outW)
			return phaseStatus{}, fmt.Errorf("stderr pipe: %w", err)
		}
		readers = append(readers, errR)
	}
	cmd := exec.Command(Shell, "-c", script)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	closeAll(outW)
	if separate {
		closeAll(errW)
	}
	if err != nil {
		closeAll(readers...)
		return phaseStatus{}, fmt.Errorf("start %s: %w", Shell, err)
	}
	pgid := cmd.Process.Pid

	var copies sync.WaitGroup
	copies.Add(len(readers))
	go func() { defer copies.Done(); passOn(out.Stdout, outR) }()
	if separate {
		go func() { defer copies.Done(); passOn(out.Stderr, readers[1]) }()
	}

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()

	var st phaseStatus
	select {
	case <-exited:
	case <-ctx.Done():
		st.stopped = true
		stopGroup(pgid, grace, exited)
	}
	<-exited
	// Whatever is left in the group is killed: a phase ends with nothing of it
	// running.
	killGroup(pgid)

	copiesDone := make(chan struct{})
	go func() { copies.Wait(); close(copiesDone) }()
	select {
	case <-copiesDone:
	case <-time.After(outputWait):
		// A process outside the group holds the pipes: stop reading.
		closeAll(readers...)
		<-copiesDone
	}
	closeAll(readers...)

	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return st, fmt.Errorf("wait: %w", waitErr)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		st.signal = ws.Signal()
		st.code = 128 + int(st.signal)
	default:
		st.code = cmd.ProcessState.ExitCode()
	}
	return st, nil
}

// stopGroup sends SIGTERM to the group, waits until the shell has exited and the
// group is gone or grace has passed, then sends SIGKILL to what is left.
func stopGroup(pgid int, grace time.Duration, exited <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	shellDone := false
	for {
		select {
		case <-deadline.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return
		case <-exited:
			shellDone = true
			exited = nil
		case <-tick.C:
		}
		if shellDone && !groupAlive(pgid) {
			return
		}
	}
}

// killGroup sends SIGKILL to the group if anything of it still runs and waits
// (at most killWait) until it is gone. Only called once the shell (the group
// leader) has been reaped by Wait, so the group id cannot have been reused while
// a member lives.
func killGroup(pgid int) {
	if !groupAlive(pgid) {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	deadline := time.Now().Add(killWait)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(pollInterval)
	}
}

// groupAlive reports whether a process of the group still runs. Zombies do not
// count: where PID 1 does not reap orphans (some containers), a killed group's
// processes stay zombies forever. Without /proc, any member counts.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		state, pgrp, ok := parseStat(string(stat))
		if ok && pgrp == pgid && state != "Z" && state != "X" {
			return true
		}
	}
	return false
}

// parseStat returns the state and process group of a /proc/<pid>/stat line:
// "pid (comm) state ppid pgrp ...", where comm may contain spaces and parens.
func parseStat(stat string) (state string, pgrp int, ok bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 3 {
		return "", 0, false
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return "", 0, false
	}
	return f[0], pgrp, true
}

// passOn copies r to w until r ends. If w fails, the rest is read and dropped so
// that the writing process never blocks on a full pipe.
func passOn(w io.Writer, r io.Reader) {
	if w == nil {
		w = io.Discard
	}
	if _, err := io.Copy(w, r); err != nil {
		_, _ = io.Copy(io.Discard, r)
	}
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}
