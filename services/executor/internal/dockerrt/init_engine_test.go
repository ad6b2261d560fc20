package dockerrt

import (
	"fmt"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// TestRelayIsTheInit: a run container has no engine init; the relay is its
// PID 1 and does an init's work. Each phase orphans many short-lived
// processes under a small PID limit: an init that did not reap them would
// leave them zombies, each holding a PID of the limit, until a fork fails.
func TestRelayIsTheInit(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	rt := newRuntime(t, cli, Options{PidsLimit: 64})
	tj := newJob(phase("orphans",
		"tr '\\0' ' ' < /proc/1/cmdline; echo",
		// 200 orphans: the subshell exits at once, its background child
		// is reparented to PID 1 and exits there.
		"i=0; while [ $i -lt 200 ]; do (true &); i=$((i+1)); done",
		"sleep 1",
		"echo zombies=$(grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l)",
	))
	res := runJob(t, rt, tj)
	wantFinished(t, res, tj)
	out := tj.stdout.String()
	if !strings.HasPrefix(out, relayTarget+" ") {
		t.Errorf("PID 1 is not the relay; its command line and the output:\n%s", out)
	}
	if !strings.Contains(out, "zombies=0\n") {
		t.Errorf("zombies left:\n%s\nstderr:\n%s", out, tj.stderr)
	}
}

// TestRelayInitLimits: the PID limit still holds with the relay as init (a
// phase cannot start more processes than it allows), and the run ends when
// its phase has, although processes it started in the background remain:
// they go with the container, as with docker-init.
func TestRelayInitLimits(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	rt := newRuntime(t, cli, Options{PidsLimit: 32})
	tj := newJob(phase("fork",
		// The shell stops at the first fork refused: in a subshell. Only
		// builtins after it, as no PID is left for a fork. The sleeps'
		// output goes elsewhere: the relay need not wait for the pipes.
		"(i=0; while [ $i -lt 100 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); echo $i > /workspace/started; done) || true",
		"read n < /workspace/started; echo started=$n",
	))
	start := time.Now()
	res := runJob(t, rt, tj)
	elapsed := time.Since(start)
	out := tj.stdout.String()
	// Between 1 and 31: the shell and the relay hold PIDs too.
	var n int
	if _, err := fmt.Sscanf(out, "started=%d", &n); err != nil || n < 1 || n >= 32 {
		t.Errorf("background processes within a limit of 32: %q (%v)\nstderr:\n%s", out, err, tj.stderr)
	}
	if !strings.Contains(tj.stderr.String(), "can't fork") {
		t.Errorf("no fork refused:\n%s", tj.stderr)
	}
	// The phase ends with its last command; sleep 60 does not hold it.
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED || res.ExitCode != 0 {
		t.Errorf("result = %+v, want FINISHED with exit code 0", res)
	}
	if elapsed > 45*time.Second {
		t.Errorf("the run took %v: it waited for the phase's background processes", elapsed)
	}
}
