package intake

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

// TestSecretCapAtIntake: a run whose secret values total more than
// MaxSecretBytes fails at intake, with a reason naming the cap and never a
// value, before the policy is asked or the run queued; at the cap, it is
// admitted. Plain (not secret) variables do not count.
func TestSecretCapAtIntake(t *testing.T) {
	half := strings.Repeat("s", MaxSecretBytes/2)
	for _, tc := range []struct {
		name   string
		env    []*runv1.EnvVar
		want   []string
		reason string
	}{
		{"at the cap", []*runv1.EnvVar{{Name: "A", Value: half, Secret: true}, {Name: "B", Value: half, Secret: true},
			{Name: "PLAIN", Value: half + half}}, []string{"received", "admitted"}, ""},
		{"one byte over", []*runv1.EnvVar{{Name: "A", Value: half, Secret: true}, {Name: "B", Value: half + "s", Secret: true}},
			[]string{"received", "finished:OUTCOME_FAILED"}, "the run's 2 secret values total 262145 bytes, over the cap of 262144 bytes per run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, allow)
			big := &runv1.RunSpec{Type: runv1.RunType_RUN_TYPE_TASK, RunnerImage: "busybox", Env: tc.env,
				Phases: []*runv1.Phase{{Name: "perform", Commands: []string{"echo hi"}}}}
			if err := f.in.Handle(context.Background(), f.seal(t, "r1", "pool-a", big, time.Now())); err != nil {
				t.Fatal(err)
			}
			if got := f.ev.kinds("r1"); !slices.Equal(got, tc.want) {
				t.Fatalf("events = %v, want %v", got, tc.want)
			}
			if tc.reason == "" {
				return
			}
			reason := f.ev.all[len(f.ev.all)-1].ev.GetFinished().GetReason()
			if !strings.Contains(reason, tc.reason) || strings.Contains(reason, "ssssss") {
				t.Errorf("reason %q, want it to say %q and no value", reason, tc.reason)
			}
			if len(f.seen) != 0 || len(f.q.runs) != 0 {
				t.Errorf("the policy was asked (%d) or the run queued (%d)", len(f.seen), len(f.q.runs))
			}
		})
	}
}
