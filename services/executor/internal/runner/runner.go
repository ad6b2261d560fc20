// Package runner is the executor's contract with its runtimes: a run (a Job)
// becomes a per-run Session of a Runtime — prepare, run one phase at a time
// with its output streams, export the workspace, tear down — in the spirit of
// Woodpecker's backend interface. The phase loop above the runtimes (timeouts,
// cancellation, hooks, results) is supervise.Run; the run timeout, the
// no-output timeout and cancellation end the job's context with a cause, and
// the session stops what runs (a signal, a grace period, then a kill).
package runner

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"syscall"
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

// Job is one run as the phase loop (supervise.Run) sees it.
type Job struct {
	RunID string
	// PoolID is the pool the run belongs to (for the labels of what a
	// runtime creates); it may be empty.
	PoolID string
	Spec   *runv1.RunSpec
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
	// Durable, when set, reports how much of the output written to Stdout and
	// Stderr (counted together, in write order, from the start of the job)
	// is stored durably; runtimes that can hold output outside the executor
	// (the Docker runtime's output relay) release it only once it is durable.
	Durable *Durable
	// OnPhase is called when a phase starts ("init", "plan", ...).
	OnPhase func(phase string)
	// Checkpoint, when set, is called before phase i (its index in
	// Selected) starts, with the job's output count so far: what a later
	// executor process needs to re-adopt the run (see Adoption).
	Checkpoint func(phase int, base uint64)
	// StopGrace is the time between the stop signal and the kill.
	StopGrace time.Duration
	// Phases, when not nil, names the phases to run: the spec's other phases
	// are skipped (see Selected). A tracked run waiting for confirmation runs
	// up to "plan", its resumption only "apply".
	Phases []string
	// ExportTo, when set, receives the workspace once every selected phase
	// has exited 0, before the session is torn down: an uncompressed tar
	// archive of the workspace root's content, names relative to it
	// (directories, regular files and symbolic links). It is a step of the
	// phase loop (the hand-off of a run waiting for confirmation).
	ExportTo io.Writer
	// Ended, when set, is called by the phase loop with the job's final
	// result as soon as it is known, before the session is torn down (the
	// runtime's containers and volume removed): the teardown then overlaps
	// whatever Ended starts. Run returns once the teardown is done.
	Ended func(Result)
	// Adopt, when set, continues a run an earlier life of this executor
	// started: its phase Adopt.Phase is running and is re-attached to rather
	// than started; the phases before it are done.
	Adopt *Adoption
}

// Adoption says where a re-adopted run stands.
type Adoption struct {
	// Phase is the index, in Selected(job), of the phase that is running.
	Phase int
	// Base is the count of output bytes (stdout and stderr together) of the
	// phases before Phase; Stored is the count of output bytes of the job that
	// logship stores durably. The running phase resends what it printed after
	// Stored-Base.
	Base, Stored uint64
}

// Result is how a job ended.
type Result struct {
	Outcome eventv1.Outcome
	// ExitCode of the last command run; -1 if none ran.
	ExitCode int
	// Reason is human-readable and never contains a secret value.
	Reason string
}

// Runtime is where phases run (Docker containers, local processes, ...). It
// opens one Session per run; the phase loop above the runtimes
// (supervise.Run) drives it. Implementations are safe for concurrent use.
type Runtime interface {
	// Open checks the job and returns its session. It creates nothing.
	Open(job *Job) (Session, error)
}

// Adopter is a runtime whose runs outlive the executor process (the Docker
// runtime: containers and their relays keep running and keep the output).
type Adopter interface {
	// Adoptable reports whether phase i (in Selected) of a run this
	// executor started still runs, and returns the run's environment (the
	// Job's Env), kept by the runtime rather than on the executor's disk.
	Adoptable(ctx context.Context, runID string, phase int) (env []string, err error)
}

// Session is one run on a runtime: prepare, run phases one by one, export the
// workspace, tear down. The phase loop calls Prepare once (not for an adopted
// run), then RunPhase for each phase in order, then Export if the job asks
// for it, and always Close, last, from the same goroutine.
type Session interface {
	// Prepare makes what every phase needs (image, workspace). An error
	// must hold no secret.
	Prepare(ctx context.Context) error
	// RunPhase runs phase i of the job (its index in Selected) and returns
	// once it has ended and its output has been written to out. When ctx
	// ends first, it stops the phase (signal, the job's StopGrace, kill),
	// and returns with Exit.Stopped set. With job.Adopt and i ==
	// job.Adopt.Phase, it re-attaches to the running phase instead.
	RunPhase(ctx context.Context, i int, p *runv1.Phase, out Output) (Exit, error)
	// Export writes the workspace as it is now to w (see Job.ExportTo).
	Export(ctx context.Context, w io.Writer) error
	// Close removes everything the session created (containers, volumes,
	// processes), whether or not the run ended well.
	Close()
}

// Output is where a phase's output goes.
type Output struct {
	Stdout, Stderr io.Writer
	// Base is the count of output bytes of the job before this phase (see
	// Job.Durable).
	Base uint64
	// Durable is the job's Durable, or nil.
	Durable *Durable
}

// Exit is how a phase ended.
type Exit struct {
	// Code is the exit code, 128+signal when killed by a signal; -1 if
	// unknown.
	Code int
	// Signal, when not 0, is the signal that killed the phase's shell.
	Signal syscall.Signal
	// Stopped: the phase was stopped because the context ended.
	Stopped bool
}

// Durable tracks how many output bytes are stored durably; it only grows.
type Durable struct {
	mu      sync.Mutex
	n       uint64
	changed chan struct{}
}

// NewDurable returns a Durable at n.
func NewDurable(n uint64) *Durable { return &Durable{n: n, changed: make(chan struct{})} }

// Set raises the count to n (a lower n is ignored).
func (d *Durable) Set(n uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n <= d.n {
		return
	}
	d.n = n
	close(d.changed)
	d.changed = make(chan struct{})
}

// Get returns the count and a channel closed when it next changes.
func (d *Durable) Get() (uint64, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n, d.changed
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
