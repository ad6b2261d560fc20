package dockerrt

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
)

// TestPhaseContainer checks the translation of a job's phase into the
// container the engine is asked for, without an engine.
func TestPhaseContainer(t *testing.T) {
	plan := &runv1.Phase{Name: "plan", Before: []string{"echo b"}, Commands: []string{"terraform plan"}}
	tests := []struct {
		name  string
		opts  Options
		grace time.Duration
		phase *runv1.Phase
		index int
		extra []mount.Mount
		check func(t *testing.T, s phaseSpec)
	}{
		{
			name: "separate stderr", opts: Options{SeparateStderr: true}, phase: plan, index: 2,
			check: func(t *testing.T, s phaseSpec) {
				if want := []string{"/.hangar/relay", "--separate-stderr", "/.hangar/io/p2.sock"}; !slices.Equal(s.Config.Entrypoint, want) {
					t.Errorf("entrypoint = %q, want %q", s.Config.Entrypoint, want)
				}
			},
		},
		{
			name: "defaults", opts: Options{}, grace: 1500 * time.Millisecond, phase: plan, index: 1,
			check: func(t *testing.T, s phaseSpec) {
				if s.Name != "hangar-run-1-1-plan" {
					t.Errorf("name = %q", s.Name)
				}
				c, h := s.Config, s.Host
				if c.Image != "runner:1" {
					t.Errorf("image %q", c.Image)
				}
				if want := []string{"/bin/sh", "-c", runner.PhaseScript(plan)}; !slices.Equal(c.Cmd, want) {
					t.Errorf("cmd = %q, want %q", c.Cmd, want)
				}
				if want := []string{"/.hangar/relay", "/.hangar/io/p1.sock"}; !slices.Equal(c.Entrypoint, want) {
					t.Errorf("entrypoint = %q, want the relay %q", c.Entrypoint, want)
				}
				if c.AttachStdout || c.AttachStderr || c.Tty || c.OpenStdin {
					t.Errorf("the container is attached: %+v", c)
				}
				if c.WorkingDir != "/workspace/infra" || !slices.Equal(c.Env, []string{"A=1", "SECRET=s"}) {
					t.Errorf("workdir %q env %q", c.WorkingDir, c.Env)
				}
				want := map[string]string{LabelManaged: "true", LabelRunID: "run-1", LabelExecutorID: "ex-1", LabelPhase: "plan", LabelPhaseIndex: "1"}
				for k, v := range want {
					if c.Labels[k] != v {
						t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
					}
				}
				if c.StopTimeout == nil || *c.StopTimeout != 2 {
					t.Errorf("stop timeout %v, want 2 (1.5 s rounded up)", c.StopTimeout)
				}
				if h.NetworkMode != "bridge" || h.Privileged || !slices.Equal(h.CapDrop, []string{"ALL"}) ||
					!slices.Contains(h.SecurityOpt, "no-new-privileges") || h.Init == nil || *h.Init ||
					h.LogConfig.Type != "none" || h.IpcMode != container.IPCModePrivate {
					t.Errorf("host config not strict: %+v", h)
				}
				if slices.Contains(h.CapAdd, "NET_RAW") || slices.Contains(h.CapAdd, "MKNOD") {
					t.Errorf("cap add %v", h.CapAdd)
				}
				if h.PidsLimit == nil || *h.PidsLimit != defaultPidsLimit || h.Memory != 0 || h.NanoCPUs != 0 {
					t.Errorf("resources %+v", h.Resources)
				}
				if len(h.Mounts) != 3 || h.Mounts[0].Type != mount.TypeVolume || h.Mounts[0].Source != "hangar-ws-run-1" ||
					h.Mounts[0].Target != "/workspace" || h.Mounts[0].VolumeOptions == nil || !h.Mounts[0].VolumeOptions.NoCopy {
					t.Errorf("mounts %+v", h.Mounts)
				}
				if len(h.Mounts) == 3 && (h.Mounts[1] != mount.Mount{Type: mount.TypeBind, Source: "/opt/hangar-relay", Target: "/.hangar/relay", ReadOnly: true} ||
					h.Mounts[2] != mount.Mount{Type: mount.TypeBind, Source: "/io/run", Target: "/.hangar/io"}) {
					t.Errorf("relay mounts %+v", h.Mounts[1:])
				}
			},
		},
		{
			name:  "every option",
			opts:  Options{Network: "none", Runtime: "runsc", Memory: 1 << 30, NanoCPUs: 5e8, PidsLimit: -1},
			extra: []mount.Mount{{Type: mount.TypeBind, Source: "/opt/cache", Target: "/cache", ReadOnly: true}},
			phase: &runv1.Phase{Name: "a very/odd name with spaces and more than thirty-two chars", Commands: []string{"x"}},
			check: func(t *testing.T, s phaseSpec) {
				if !strings.HasPrefix(s.Name, "hangar-run-1-0-a_very_odd_name") || len(s.Name) != len("hangar-run-1-0-")+32 {
					t.Errorf("name = %q", s.Name)
				}
				h := s.Host
				if h.NetworkMode != "none" || h.Runtime != "runsc" || h.Memory != 1<<30 || h.NanoCPUs != 5e8 || h.PidsLimit != nil {
					t.Errorf("host config %+v", h)
				}
				if len(h.Mounts) != 4 || h.Mounts[3] != (mount.Mount{Type: mount.TypeBind, Source: "/opt/cache", Target: "/cache", ReadOnly: true}) {
					t.Errorf("mounts %+v", h.Mounts)
				}
				if s.Config.StopTimeout == nil || *s.Config.StopTimeout != 0 {
					t.Errorf("stop timeout %v", s.Config.StopTimeout)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.ExecutorID, opts.RelayPath = "ex-1", "/opt/hangar-relay"
			r, err := New(noEngine{}, opts)
			if err != nil {
				t.Fatal(err)
			}
			env := []string{"A=1", "SECRET=s"}
			job := &runner.Job{RunID: "run-1", Spec: &runv1.RunSpec{RunnerImage: "runner:1"}, Env: env, StopGrace: tc.grace}
			s := r.phaseContainer(job, r.opts.Network, "hangar-ws-run-1", "/workspace/infra", "/io/run", tc.index, tc.phase, tc.extra)
			tc.check(t, s)
			s.Config.Env[0] = "changed"
			if env[0] != "A=1" {
				t.Error("the container's environment shares the job's slice")
			}
		})
	}
}

// noEngine is a Client that is never called: the translation needs none.
type noEngine struct{ Client }
