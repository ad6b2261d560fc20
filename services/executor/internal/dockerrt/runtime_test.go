package dockerrt

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/mountguard"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
)

// TestRunPhasesInOrder: phases and hooks run in order. By default a phase's
// stdout and stderr are one pipe (ADR 0020): all its output arrives as
// stdout, each "+ command" trace before the command's output, exactly as
// written; with SeparateStderr the traces and stderr lines arrive as stderr.
func TestRunPhasesInOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		separate bool
		wantOut  string
		wantErr  []string // in stderr, in order
	}{
		{"one pipe (default)", false,
			"+ echo before-init\nbefore-init\n+ echo init\ninit\n+ echo after-init\nafter-init\n" +
				"+ echo plan-out\nplan-out\n+ echo plan-err >&2\nplan-err\n+ printf 'part-'; printf 'err-' >&2; echo end\npart-err-end\n" +
				"+ echo before-apply\nbefore-apply\n+ echo apply\napply\n", nil},
		{"separate stderr", true, "before-init\ninit\nafter-init\nplan-out\npart-end\nbefore-apply\napply\n",
			[]string{"+ echo before-init\n", "+ echo init\n", "+ echo after-init\n", "plan-err\n", "err-", "+ echo apply\n"}},
	}
	cli := engine(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rt := newRuntimeMode(t, cli, Options{SeparateStderr: tc.separate})
			tj := newJob(
				&runv1.Phase{Name: "init", Before: []string{"echo before-init"}, Commands: []string{"echo init"}, After: []string{"echo after-init"}},
				&runv1.Phase{Name: "plan", Commands: []string{"echo plan-out", "echo plan-err >&2", "printf 'part-'; printf 'err-' >&2; echo end"}},
				&runv1.Phase{Name: "skipped"},
				&runv1.Phase{Name: "apply", Before: []string{"echo before-apply"}, Commands: []string{"echo apply"}},
			)
			res := runJob(t, rt, tj)
			wantFinished(t, res, tj)
			if got, want := tj.startedPhases(), []string{"init", "plan", "apply"}; !slices.Equal(got, want) {
				t.Errorf("OnPhase calls = %v, want %v", got, want)
			}
			if got := tj.stdout.String(); got != tc.wantOut {
				t.Errorf("stdout = %q, want %q", got, tc.wantOut)
			}
			stderr := tj.stderr.String()
			if len(tc.wantErr) == 0 && stderr != "" {
				t.Errorf("stderr = %q, want nothing (one pipe)", stderr)
			}
			rest := stderr
			for _, want := range tc.wantErr {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("stderr lacks %q (in order):\n%s", want, stderr)
					break
				}
				rest = rest[i+len(want):]
			}
		})
	}
}

func TestRunFailureStopsTheRun(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	tests := []struct {
		name       string
		phases     []*runv1.Phase
		wantCode   int
		wantReason string
		wantPhases []string
		notInOut   []string
	}{
		{
			name: "command exits 3",
			phases: []*runv1.Phase{
				phase("init", "echo init"),
				{Name: "plan", Commands: []string{"echo planning", "exit 3", "echo unreachable"}, After: []string{"echo after-plan"}},
				phase("apply", "echo apply"),
			},
			wantCode:   3,
			wantReason: "phase plan exited with code 3",
			wantPhases: []string{"init", "plan"},
			notInOut:   []string{"unreachable", "after-plan", "apply"},
		},
		{
			name: "before hook fails",
			phases: []*runv1.Phase{
				{Name: "init", Before: []string{"false"}, Commands: []string{"echo init"}},
				phase("plan", "echo plan"),
			},
			wantCode:   1,
			wantReason: "phase init exited with code 1",
			wantPhases: []string{"init"},
			notInOut:   []string{"init", "plan"},
		},
		{
			// The relay (PID 1) exits with 128+signal, as a shell would.
			name:       "killed by a signal",
			phases:     []*runv1.Phase{phase("perform", "echo x", "kill -KILL $$", "echo unreachable")},
			wantCode:   137,
			wantReason: "phase perform exited with code 137",
			wantPhases: []string{"perform"},
			notInOut:   []string{"unreachable"},
		},
		{
			name:       "command not found",
			phases:     []*runv1.Phase{phase("perform", "no-such-command-here")},
			wantCode:   127,
			wantReason: "phase perform exited with code 127",
			wantPhases: []string{"perform"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rt := newRuntime(t, cli, Options{})
			tj := newJob(tc.phases...)
			res := runJob(t, rt, tj)
			if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || res.ExitCode != tc.wantCode || res.Reason != tc.wantReason {
				t.Errorf("result = %+v, want FAILED, %d, %q", res, tc.wantCode, tc.wantReason)
			}
			if got := tj.startedPhases(); !slices.Equal(got, tc.wantPhases) {
				t.Errorf("phases = %v, want %v", got, tc.wantPhases)
			}
			for _, s := range tc.notInOut {
				if strings.Contains(tj.stdout.String(), s) {
					t.Errorf("stdout has %q:\n%s", s, tj.stdout)
				}
			}
		})
	}
}

func TestRunEnvAndWorkspace(t *testing.T) {
	t.Parallel()
	ws := t.TempDir()
	writeFile(t, filepath.Join(ws, "root.txt"), "at the root\n", 0o644)
	writeFile(t, filepath.Join(ws, "stacks", "prod", "main.tf"), "resource \"x\" \"y\" {}\n", 0o644)
	writeFile(t, filepath.Join(ws, "stacks", "prod", ".hidden"), "hidden\n", 0o600)
	writeFile(t, filepath.Join(ws, "stacks", "prod", "run.sh"), "#!/bin/sh\necho script-ran\n", 0o755)
	if err := os.Symlink("../../root.txt", filepath.Join(ws, "stacks", "prod", "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(ws, "empty-dir"), 0o755); err != nil {
		t.Fatal(err)
	}

	rt := newRuntime(t, engine(t), Options{})
	tj := newJob(
		phase("init",
			"pwd",
			"cat main.tf .hidden link.txt /workspace/root.txt",
			"./run.sh",
			"test -d /workspace/empty-dir && echo empty-dir-ok",
			`printf '[%s] [%s] [%s]\n' "$PLAIN" "$SPACED" "$QUOTED"`,
			"echo from-init > state.txt",
		),
		phase("plan", "cat /workspace/stacks/prod/state.txt", "ls -a /workspace | tr '\\n' ' '; echo"),
	)
	tj.Workspace = ws
	tj.Spec.Source = &runv1.Source{ProjectRoot: "stacks/prod"}
	tj.Env = []string{"PLAIN=value", "SPACED=a b  c", `QUOTED='"$HOME"'`}
	res := runJob(t, rt, tj)
	wantFinished(t, res, tj)
	want := strings.Join([]string{
		"/workspace/stacks/prod",
		"resource \"x\" \"y\" {}",
		"hidden",
		"at the root",
		"at the root",
		"script-ran",
		"empty-dir-ok",
		`[value] [a b  c] ['"$HOME"']`,
		"from-init",
		". .. empty-dir root.txt stacks ",
	}, "\n") + "\n"
	if got := tj.stdout.String(); got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	// The run wrote into its volume, never into the host workspace.
	if _, err := os.Stat(filepath.Join(ws, "stacks", "prod", "state.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state.txt on the host: %v", err)
	}
}

func TestRunWithoutWorkspace(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, engine(t), Options{})
	tj := newJob(phase("perform", "pwd", "ls -A /workspace | wc -l"))
	res := runJob(t, rt, tj)
	wantFinished(t, res, tj)
	if got, want := tj.stdout.String(), "/workspace\n0\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, engine(t), Options{})
	ws := t.TempDir()
	writeFile(t, filepath.Join(ws, "file"), "x", 0o644)
	tests := []struct {
		name       string
		edit       func(*testJob)
		wantReason string
	}{
		{"project root escapes", func(tj *testJob) { tj.Spec.Source = &runv1.Source{ProjectRoot: "../etc"} }, `project root "../etc" leaves the workspace`},
		{"project root missing", func(tj *testJob) { tj.Spec.Source = &runv1.Source{ProjectRoot: "nope"} }, `project root "nope"`},
		{"project root is a file", func(tj *testJob) { tj.Spec.Source = &runv1.Source{ProjectRoot: "file"} }, `project root "file" is not a directory`},
		{"bad run id", func(tj *testJob) { tj.RunID = "a/b" }, `invalid run id "a/b"`},
		{"no image", func(tj *testJob) { tj.Spec.RunnerImage = "" }, "no runner image"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tj := newJob(phase("init", "echo should-not-run"))
			tj.Workspace = ws
			tc.edit(tj)
			res := runJob(t, rt, tj)
			if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || res.ExitCode != -1 || !strings.Contains(res.Reason, tc.wantReason) {
				t.Errorf("result = %+v, want FAILED, -1, reason with %q", res, tc.wantReason)
			}
			if out := tj.stdout.String(); out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
}

func TestRunNoPhases(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, engine(t), Options{})
	tj := newJob(&runv1.Phase{Name: "init"})
	res := runJob(t, rt, tj)
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED || res.ExitCode != -1 {
		t.Errorf("result = %+v, want FINISHED, -1", res)
	}
	if len(tj.startedPhases()) != 0 {
		t.Errorf("phases started: %v", tj.startedPhases())
	}
}

func TestRunLargeOutputIsComplete(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, engine(t), Options{})
	tj := newJob(phase("plan", "seq 1 50000", "seq 1 30000 >&2"))
	res := runJob(t, rt, tj)
	wantFinished(t, res, tj)
	var want strings.Builder
	for i := 1; i <= 50000; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	if got := tj.stdout.String(); got != want.String() {
		t.Errorf("stdout: %d bytes, want %d; ends %q", len(got), want.Len(), got[max(0, len(got)-20):])
	}
	if !strings.HasSuffix(tj.stderr.String(), "\n29999\n30000\n") {
		t.Errorf("stderr ends %q", tj.stderr.String()[max(0, len(tj.stderr.String())-20):])
	}
}

// inspector records the inspection of every container a runtime creates,
// before it starts.
type inspector struct {
	t   *testing.T
	cli *client.Client
	mu  sync.Mutex
	got []container.InspectResponse
}

func inspectCreated(t *testing.T, rt *Runtime, cli *client.Client) *inspector {
	in := &inspector{t: t, cli: cli}
	rt.created = func(id string) {
		res, err := cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
		if err != nil {
			t.Errorf("inspect %s: %v", id, err)
			return
		}
		in.mu.Lock()
		defer in.mu.Unlock()
		in.got = append(in.got, res.Container)
	}
	return in
}

func (in *inspector) containers() []container.InspectResponse {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.got)
}

func TestRunSecurityAndConfig(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	rt := newRuntime(t, cli, Options{Memory: 256 << 20, NanoCPUs: 500_000_000})
	in := inspectCreated(t, rt, cli)
	tj := newJob(
		phase("init",
			"grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd):' /proc/self/status",
			"id -u",
		),
		phase("plan", "echo plan"),
	)
	res := runJob(t, rt, tj)
	wantFinished(t, res, tj)

	// CHOWN(0) DAC_OVERRIDE(1) FOWNER(3) FSETID(4) KILL(5) SETGID(6)
	// SETUID(7) NET_BIND_SERVICE(10).
	const caps = "00000000000004fb"
	out := tj.stdout.String()
	for _, want := range []string{"NoNewPrivs:\t1\n", "CapEff:\t" + caps + "\n", "CapPrm:\t" + caps + "\n", "CapBnd:\t" + caps + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("/proc/self/status lacks %q:\n%s", want, out)
		}
	}

	cs := in.containers()
	if len(cs) != 2 {
		t.Fatalf("%d containers created, want 2", len(cs))
	}
	for i, c := range cs {
		hc, cfg := c.HostConfig, c.Config
		name := []string{"init", "plan"}[i]
		wantLabels := map[string]string{
			LabelManaged: "true", LabelRunID: tj.RunID, LabelExecutorID: rt.opts.ExecutorID, LabelPhase: name,
		}
		for k, v := range wantLabels {
			if cfg.Labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q", name, k, cfg.Labels[k], v)
			}
		}
		if hc.Privileged {
			t.Errorf("%s: privileged", name)
		}
		if !slices.Equal(hc.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: CapDrop = %v", name, hc.CapDrop)
		}
		if !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
			t.Errorf("%s: SecurityOpt = %v", name, hc.SecurityOpt)
		}
		if hc.Init == nil || *hc.Init {
			t.Errorf("%s: Init = %v, want false (the relay is the init)", name, hc.Init)
		}
		if hc.LogConfig.Type != "none" {
			t.Errorf("%s: log driver %q, want none", name, hc.LogConfig.Type)
		}
		if hc.PidsLimit == nil || *hc.PidsLimit != 4096 {
			t.Errorf("%s: PidsLimit = %v, want 4096", name, hc.PidsLimit)
		}
		if hc.Memory != 256<<20 || hc.NanoCPUs != 500_000_000 {
			t.Errorf("%s: Memory %d NanoCPUs %d", name, hc.Memory, hc.NanoCPUs)
		}
		if string(hc.NetworkMode) != "bridge" {
			t.Errorf("%s: NetworkMode %q, want bridge", name, hc.NetworkMode)
		}
		if cfg.Tty || cfg.OpenStdin {
			t.Errorf("%s: Tty %v OpenStdin %v", name, cfg.Tty, cfg.OpenStdin)
		}
		// The workspace volume, the relay (read-only) and the run's own
		// socket directory: nothing else of the host.
		if len(hc.Mounts) != 3 || hc.Mounts[0].Type != mount.TypeVolume || hc.Mounts[0].Source != "hangar-ws-"+tj.RunID || hc.Mounts[0].Target != "/workspace" ||
			hc.Mounts[1].Target != "/.hangar/relay" || !hc.Mounts[1].ReadOnly || hc.Mounts[2].Target != "/.hangar/io" {
			t.Errorf("%s: mounts %+v", name, hc.Mounts)
		}
		if !slices.Equal(cfg.Cmd, []string{"/bin/sh", "-c", runner.PhaseScript(tj.Spec.Phases[i])}) {
			t.Errorf("%s: Cmd %q", name, cfg.Cmd)
		}
	}
}

func TestRunNetwork(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ctx := context.Background()
	netName := uniqueID("hangar-test-net")
	if _, err := cli.NetworkCreate(ctx, netName, client.NetworkCreateOptions{Driver: "bridge"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := cli.NetworkRemove(context.Background(), netName, client.NetworkRemoveOptions{}); err != nil {
			t.Errorf("remove network: %v", err)
		}
	})
	tests := []struct {
		name        string
		network     string
		wantNetwork string
		// A user-defined network has the engine's embedded DNS server.
		wantEmbeddedDNS bool
	}{
		{"default is bridge", "", "bridge", false},
		{"user-defined network", netName, netName, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rt := newRuntime(t, cli, Options{Network: tc.network})
			in := inspectCreated(t, rt, cli)
			tj := newJob(phase("plan", "ip -o -4 addr show eth0", "grep -c 'nameserver 127.0.0.11' /etc/resolv.conf || true"))
			res := runJob(t, rt, tj)
			wantFinished(t, res, tj)
			cs := in.containers()
			if len(cs) != 1 || string(cs[0].HostConfig.NetworkMode) != tc.wantNetwork {
				t.Fatalf("containers %d, NetworkMode %q, want %q", len(cs), cs[0].HostConfig.NetworkMode, tc.wantNetwork)
			}
			nw, err := cli.NetworkInspect(ctx, tc.wantNetwork, client.NetworkInspectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`).FindStringSubmatch(tj.stdout.String())
			if m == nil {
				t.Fatalf("no IPv4 address in %q", tj.stdout)
			}
			addr := netip.MustParseAddr(m[1])
			inSubnet := false
			for _, c := range nw.Network.IPAM.Config {
				if c.Subnet.IsValid() && c.Subnet.Contains(addr) {
					inSubnet = true
				}
			}
			if !inSubnet {
				t.Errorf("container address %s not in network %s (%+v)", addr, tc.wantNetwork, nw.Network.IPAM.Config)
			}
			dns := strings.HasSuffix(tj.stdout.String(), "\n1\n")
			if dns != tc.wantEmbeddedDNS {
				t.Errorf("embedded DNS %v, want %v:\n%s", dns, tc.wantEmbeddedDNS, tj.stdout)
			}
		})
	}
}

func TestRunExtraMounts(t *testing.T) {
	t.Parallel()
	roDir, rwDir := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(roDir, "hello.txt"), "from the host\n", 0o644)
	mounts, err := ParseMounts(fmt.Sprintf("%s:/mnt/ro:ro, %s:/mnt/rw", roDir, rwDir), mountguard.New(nil))
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, engine(t), Options{ExtraMounts: mounts})
	tj := newJob(phase("plan",
		"cat /mnt/ro/hello.txt",
		"if touch /mnt/ro/new 2>/dev/null; then echo ro-writable; else echo ro-refused; fi",
		"echo from-the-run > /mnt/rw/out.txt",
	))
	res := runJob(t, rt, tj)
	wantFinished(t, res, tj)
	if got, want := tj.stdout.String(), "from the host\nro-refused\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	b, err := os.ReadFile(filepath.Join(rwDir, "out.txt"))
	if err != nil || string(b) != "from-the-run\n" {
		t.Errorf("rw mount: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(roDir, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ro mount written: %v", err)
	}
}

func TestRunUnknownRuntime(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	rt := newRuntime(t, cli, Options{Runtime: "nope"})
	for i := range 2 {
		tj := newJob(phase("init", "echo should-not-run"))
		res := runJob(t, rt, tj)
		if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(res.Reason, `container runtime "nope" is not available on this host`) {
			t.Fatalf("run %d: result = %+v, want FAILED naming the runtime", i, res)
		}
		if tj.stdout.String() != "" {
			t.Errorf("run %d: stdout %q", i, tj.stdout)
		}
	}
	if err := rt.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The engine's own runtime, named explicitly, works.
	ok := newRuntime(t, cli, Options{Runtime: "runc"})
	tj := newJob(phase("init", "echo ran"))
	wantFinished(t, runJob(t, ok, tj), tj)
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	tests := []struct {
		name     string
		script   []string
		grace    time.Duration
		wantCode int
		wantOut  string
	}{
		{
			// SIGTERM reaches the job (through the relay, PID 1), which exits on its own.
			name:     "job handles SIGTERM",
			script:   []string{"trap 'echo got-term; exit 42' TERM", "echo ready", "sleep 30 & wait"},
			grace:    20 * time.Second,
			wantCode: 42,
			wantOut:  "ready\ngot-term\n",
		},
		{
			// A job that ignores SIGTERM is killed after the grace period.
			name:     "job ignores SIGTERM",
			script:   []string{"trap '' TERM", "echo ready", "sleep 30"},
			grace:    time.Second,
			wantCode: 137,
			wantOut:  "ready\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rt := newRuntime(t, cli, Options{})
			tj := newJob(phase("apply", tc.script...), phase("after", "echo never"))
			tj.StopGrace = tc.grace
			ready := newSyncBuffer("ready\n")
			tj.stdout = ready
			tj.Stdout = ready
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			go func() {
				<-ready.seen
				cancel(runner.ErrCancelled)
			}()
			start := time.Now()
			res := supervise.Run(ctx, rt, tj.Job, supervise.Limits{})
			elapsed := time.Since(start)
			if res.ExitCode != tc.wantCode || res.Outcome == eventv1.Outcome_OUTCOME_FINISHED {
				t.Errorf("result = %+v, want exit code %d and not FINISHED", res, tc.wantCode)
			}
			if !strings.Contains(res.Reason, runner.ErrCancelled.Error()) {
				t.Errorf("reason %q does not name the cause", res.Reason)
			}
			if got := tj.stdout.String(); got != tc.wantOut {
				t.Errorf("stdout = %q, want %q", got, tc.wantOut)
			}
			if got := tj.startedPhases(); !slices.Equal(got, []string{"apply"}) {
				t.Errorf("phases = %v", got)
			}
			// Not a race: sleep 30 would take longer than grace + margin.
			if limit := tc.grace + 20*time.Second; elapsed > limit {
				t.Errorf("Run returned after %v, want within %v", elapsed, limit)
			}
		})
	}
}

func TestRunContextAlreadyEnded(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, engine(t), Options{})
	tj := newJob(phase("init", "echo should-not-run"))
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(runner.ErrRunTimeout)
	res := supervise.Run(ctx, rt, tj.Job, supervise.Limits{})
	if res.Outcome != eventv1.Outcome_OUTCOME_TIMED_OUT || res.ExitCode != -1 {
		t.Errorf("result = %+v", res)
	}
	if tj.stdout.String() != "" {
		t.Errorf("stdout %q", tj.stdout)
	}
}

func TestReap(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ctx := context.Background()
	rt := newRuntime(t, cli, Options{})
	other := newRuntime(t, cli, Options{})

	// Leftovers of a crashed executor: a running and a stopped container
	// of one run, the volume of another, and those of another executor.
	leftover := func(executorID, runID string, start bool) string {
		labels := map[string]string{LabelManaged: "true", LabelExecutorID: executorID, LabelRunID: runID, LabelPhase: "plan"}
		c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Config:     &container.Config{Image: testImage, Cmd: []string{"sleep", "300"}, Labels: labels},
			HostConfig: &container.HostConfig{Init: new(true)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if start {
			if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		return c.ID
	}
	volume := func(executorID, runID string) {
		labels := map[string]string{LabelManaged: "true", LabelExecutorID: executorID, LabelRunID: runID}
		if _, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: "hangar-ws-" + runID, Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	runA, runB, runOther := uniqueID("run-a"), uniqueID("run-b"), uniqueID("run-other")
	leftover(rt.opts.ExecutorID, runA, true)
	leftover(rt.opts.ExecutorID, runA, false)
	volume(rt.opts.ExecutorID, runA)
	volume(rt.opts.ExecutorID, runB)
	otherID := leftover(other.opts.ExecutorID, runOther, true)
	volume(other.opts.ExecutorID, runOther)

	ids, err := rt.Reap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{runA, runB}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("Reap = %v, want %v", ids, want)
	}
	// The other executor's objects are untouched.
	if _, err := cli.ContainerInspect(ctx, otherID, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("other executor's container: %v", err)
	}
	if _, err := cli.VolumeInspect(ctx, "hangar-ws-"+runOther, client.VolumeInspectOptions{}); err != nil {
		t.Errorf("other executor's volume: %v", err)
	}
	if ids, err := other.Reap(ctx); err != nil || !slices.Equal(ids, []string{runOther}) {
		t.Errorf("other Reap = %v, %v", ids, err)
	}
	// Nothing left: Reap again finds nothing (and the cleanups check).
	if ids, err := rt.Reap(ctx); err != nil || len(ids) != 0 {
		t.Errorf("second Reap = %v, %v", ids, err)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	bad := t.TempDir()
	writeFile(t, filepath.Join(bad, "config.json"), `{"auths": {"r.example": {"auth": "not base64!"}}}`, 0o600)
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no executor id", Options{}, "empty executor id"},
		{"docker socket mount", Options{ExecutorID: "x", ExtraMounts: []Mount{{Source: "/var/run/docker.sock", Target: "/s"}}}, "is the Docker socket"},
		{"missing docker config", Options{ExecutorID: "x", DockerConfigDir: filepath.Join(bad, "nope")}, "docker config dir"},
		{"bad docker config", Options{ExecutorID: "x", DockerConfigDir: bad}, "auth is not valid base64"},
		{"negative memory", Options{ExecutorID: "x", Memory: -1}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(cli, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New error = %v, want one with %q", err, tc.wantErr)
			}
		})
	}
	if _, err := New(nil, Options{ExecutorID: "x"}); err == nil {
		t.Error("New(nil client) succeeded")
	}
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// userImage builds an image from the test image that runs as user (a
// name in its /etc/passwd: runner, uid 1983, group runners, gid 1984).
func userImage(t *testing.T, cli *client.Client, user string) string {
	t.Helper()
	ctx := context.Background()
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{Image: testImage}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nrunner:x:1983:1984:runner:/tmp:/bin/sh\n",
		"etc/group":  "root:x:0:\nrunners:x:1984:\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.CopyToContainer(ctx, c.ID, client.CopyToContainerOptions{DestinationPath: "/", Content: &buf}); err != nil {
		t.Fatal(err)
	}
	ref := "hangar-test/busybox-user:" + uniqueID("t")
	if _, err := cli.ContainerCommit(ctx, c.ID, client.ContainerCommitOptions{Reference: ref, Changes: []string{"USER " + user}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{}); err != nil {
			t.Errorf("remove %s: %v", ref, err)
		}
	})
	return ref
}

func TestRunNonRootImageOwnsTheWorkspace(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ws := t.TempDir()
	writeFile(t, filepath.Join(ws, "proj", "main.tf"), "x\n", 0o644)
	tests := []struct {
		name, user, workspace, root, want string
	}{
		{"named user", "runner", ws, "proj", "1983 1984\n1983:1984 1983:1984 1983:1984\nwritable\n"},
		{"user and group names", "runner:runners", ws, "proj", "1983 1984\n1983:1984 1983:1984 1983:1984\nwritable\n"},
		{"numeric user", "1983", ws, "proj", "1983 1984\n1983:1984 1983:1984 1983:1984\nwritable\n"},
		{"numeric user and group", "2000:3000", ws, "proj", "2000 3000\n2000:3000 2000:3000 2000:3000\nwritable\n"},
		{"no workspace", "runner", "", "proj", "1983 1984\n1983:1984 1983:1984\nwritable\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rt := newRuntime(t, cli, Options{})
			files := "/workspace /workspace/proj /workspace/proj/main.tf"
			if tc.workspace == "" {
				files = "/workspace /workspace/proj"
			}
			tj := newJob(phase("init",
				"echo $(id -u) $(id -g)",
				"echo $(stat -c %u:%g "+files+")",
				"touch /workspace/top main2.tf && echo writable",
			))
			tj.Spec.RunnerImage = userImage(t, cli, tc.user)
			tj.Workspace = tc.workspace
			tj.Spec.Source = &runv1.Source{ProjectRoot: tc.root}
			res := runJob(t, rt, tj)
			wantFinished(t, res, tj)
			if got := tj.stdout.String(); got != tc.want {
				t.Errorf("stdout = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("unknown user", func(t *testing.T) {
		t.Parallel()
		rt := newRuntime(t, cli, Options{})
		tj := newJob(phase("init", "echo never"))
		tj.Spec.RunnerImage = userImage(t, cli, "ghost")
		res := runJob(t, rt, tj)
		if res.Outcome != eventv1.Outcome_OUTCOME_FAILED || !strings.Contains(res.Reason, `resolve user "ghost" of the runner image`) {
			t.Errorf("result = %+v", res)
		}
	})
}

// TestReapKeepsToItsPool: executors of two pools on one engine with the same
// executor id (the host name is the default id) never reap each other's
// runs; objects without a pool label (made before the label existed) are
// still reaped by an executor of that id, so an upgrade loses nothing.
func TestReapKeepsToItsPool(t *testing.T) {
	t.Parallel()
	cli := engine(t)
	ctx := context.Background()
	id := uniqueID("exec-shared")
	poolA := newRuntime(t, cli, Options{ExecutorID: id, PoolID: "pool-a"})
	poolB := newRuntime(t, cli, Options{ExecutorID: id, PoolID: "pool-b"})
	plain := newRuntime(t, cli, Options{ExecutorID: id})

	// A run of pool B, made by its runtime: the labels name the pool.
	tj := newJob(phase("plan", "sleep 300"))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan runner.Result, 1)
	go func() { done <- supervise.Run(runCtx, poolB, tj.Job, supervise.Limits{}) }()
	var cid string
	deadline := time.Now().Add(2 * time.Minute)
	for cid == "" && time.Now().Before(deadline) {
		f := client.Filters{}
		f.Add("label", LabelRunID+"="+tj.Job.RunID)
		f.Add("status", "running")
		list, err := cli.ContainerList(ctx, client.ContainerListOptions{Filters: f})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == 1 {
			cid = list.Items[0].ID
			if got := list.Items[0].Labels[LabelPoolID]; got != "pool-b" {
				t.Errorf("label %s = %q, want pool-b", LabelPoolID, got)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cid == "" {
		stop()
		t.Fatalf("run %s: no running container after 2 minutes", tj.Job.RunID)
	}
	// A leftover without a pool label (an executor before the label).
	legacyRun := uniqueID("run-legacy")
	labels := map[string]string{LabelManaged: "true", LabelExecutorID: id, LabelRunID: legacyRun}
	if _, err := cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: "hangar-ws-" + legacyRun, Labels: labels}); err != nil {
		t.Fatal(err)
	}

	// Pool A's and the plaintext executor's reaps take neither pool B's
	// run nor (for pool A) leave the legacy volume.
	if ids, err := poolA.Reap(ctx); err != nil || !slices.Equal(ids, []string{legacyRun}) {
		t.Errorf("pool A's Reap = %v, %v; want [%s] (the unlabelled leftover only)", ids, err, legacyRun)
	}
	if ids, err := plain.Reap(ctx); err != nil || len(ids) != 0 {
		t.Errorf("plaintext executor's Reap = %v, %v; want nothing (pool B's run carries a pool label)", ids, err)
	}
	if c, err := cli.ContainerInspect(ctx, cid, client.ContainerInspectOptions{}); err != nil || !c.Container.State.Running {
		t.Errorf("pool B's run container after the other reaps: %v (running: %v)", err, err == nil && c.Container.State.Running)
	}
	stop()
	if res := <-done; res.Outcome == eventv1.Outcome_OUTCOME_FINISHED {
		t.Errorf("cancelled run finished: %+v", res)
	}
}
