// Package runner defines what every runtime of the executor does with a run (a
// Job) and how a run's end is described (a Result), and supervises a job: the
// run timeout, the no-output timeout and cancellation all end the job's context
// with a cause, and the runtime stops what runs (a signal, a grace period, then
// a kill) and returns.
package runner

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

// Causes with which a job's context ends; a runtime need not inspect them:
// Supervise turns them into the Result.
var (
	// ErrCancelled: the control plane (or the operator) cancelled the run.
	ErrCancelled = errors.New("run cancelled")
	// ErrRunTimeout: the run took longer than its run timeout.
	ErrRunTimeout = errors.New("run timeout exceeded")
	// ErrLogsTimeout: the run printed nothing for its no-output timeout.
	ErrLogsTimeout = errors.New("no output within the logs timeout")
	// ErrLeaseLost: the executor lost the run's lease; it must stop at once.
	ErrLeaseLost = errors.New("lease lost")
)

// Job is one run as a runtime sees it.
type Job struct {
	RunID string
	Spec  *runv1.RunSpec
	// Workspace is a host directory holding the fetched source (already checked
	// out); the phases run in Workspace/<spec.source.project_root>. The process
	// runtime runs in it; the Docker runtime copies it into the run's volume.
	Workspace string
	// Env is the complete environment of the phases, as NAME=VALUE: the run's
	// variables plus the executor's whitelisted and masked variables.
	Env []string
	// Stdout and Stderr receive the output, unmasked (logship masks it). Writes
	// may come from two goroutines, one per writer.
	Stdout, Stderr io.Writer
	// OnPhase is called when a phase starts ("init", "plan", ...).
	OnPhase func(phase string)
	// StopGrace is the time between the stop signal and the kill.
	StopGrace time.Duration
	// Phases, when not nil, names the phases to run: the spec's other phases
	// are skipped (see Selected). A tracked run waiting for confirmation runs
	// up to "plan", its resumption only "apply".
	Phases []string
	// AfterPhases, when set, is called once every selected phase has exited
	// 0, before the runtime removes what it created, with a function that
	// writes the workspace as it is now to w: an uncompressed tar archive of
	// the workspace root's content, names relative to it (directories,
	// regular files and symbolic links). An error from AfterPhases fails the
	// run with the error as its reason, so it must hold no secret.
	AfterPhases func(ctx context.Context, export func(w io.Writer) error) error
}

// Result is how a job ended.
type Result struct {
	Outcome eventv1.Outcome
	// ExitCode of the last command run; -1 if none ran.
	ExitCode int
	// Reason is human-readable and never contains a secret value.
	Reason string
}

// Runtime runs jobs. Run returns when the job has ended and everything it
// created (containers, volumes, processes) is gone. When ctx ends, Run stops
// the job (signal, StopGrace, kill) and returns; its Result then only needs the
// exit code and Outcome may be left to Supervise.
type Runtime interface {
	Run(ctx context.Context, job *Job) Result
}

// PhaseScript returns the shell script of one phase: its before hooks, commands
// and after hooks in order, stopping at the first failure (`set -e`), each command
// echoed as "+ command" on stderr first (`set -x`-like, but only for the lines the
// spec gives).
func PhaseScript(p *runv1.Phase) string {
	var b []byte
	b = append(b, "set -e\n"...)
	for _, group := range [][]string{p.GetBefore(), p.GetCommands(), p.GetAfter()} {
		for _, c := range group {
			b = append(b, "printf '%s\\n' "...)
			b = append(b, shellQuote("+ "+c)...)
			b = append(b, " >&2\n"...)
			b = append(b, c...)
			b = append(b, '\n')
		}
	}
	return string(b)
}

func shellQuote(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, `'\''`...)
		} else {
			out = append(out, s[i])
		}
	}
	return string(append(out, '\''))
}

// Selected returns the phases of the job to run, in order: the spec's phases
// with something to run (Phases), narrowed to Job.Phases when it is not nil.
func Selected(job *Job) []*runv1.Phase {
	all := Phases(job.Spec)
	if job.Phases == nil {
		return all
	}
	var out []*runv1.Phase
	for _, p := range all {
		if slices.Contains(job.Phases, p.GetName()) {
			out = append(out, p)
		}
	}
	return out
}

// Phases returns the phases of a spec that have something to run, in order.
func Phases(spec *runv1.RunSpec) []*runv1.Phase {
	var out []*runv1.Phase
	for _, p := range spec.GetPhases() {
		if len(p.GetBefore())+len(p.GetCommands())+len(p.GetAfter()) > 0 {
			out = append(out, p)
		}
	}
	return out
}
