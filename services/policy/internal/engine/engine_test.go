package engine

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
)

const imagePolicy = `package hangar.initialization

deny contains msg if {
	not startswith(input.runner_image, "registry.internal/")
	msg := sprintf("runner image %q is not from registry.internal/", [input.runner_image])
}

deny contains "zzz: stack is frozen" if {
	"frozen" in input.stack.labels
}

deny contains "aaa: AWS_SECRET_ACCESS_KEY must not be passed to runs" if {
	"AWS_SECRET_ACCESS_KEY" in input.environment_variables
}
`

// writePolicy writes src to a .rego file in a fresh directory and returns its path.
func writePolicy(t testing.TB, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.rego")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func request(image string, labels, env []string) *policyv1.EvaluateRequest {
	return &policyv1.EvaluateRequest{
		Run:                  &policyv1.RunInput{Id: "run-1", Type: "TRACKED"},
		Stack:                &policyv1.StackInput{Id: "stack-1", Name: "prod", Labels: labels},
		Commit:               &policyv1.CommitInput{Sha: "abc", Branch: "main", Message: "fix", Author: "ada"},
		RunnerImage:          image,
		EnvironmentVariables: env,
		PoolId:               "pool-1",
	}
}

func TestEvaluate(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		policy string // "" = no policy configured
		req    *policyv1.EvaluateRequest
		want   Decision
	}{
		{
			name: "no policy allows everything",
			req:  request("docker.io/anything", []string{"frozen"}, []string{"AWS_SECRET_ACCESS_KEY"}),
			want: Decision{Allowed: true, Deny: []string{}},
		},
		{
			name:   "allowed",
			policy: imagePolicy,
			req:    request("registry.internal/runner:1", []string{"team-a"}, []string{"TF_VAR_region"}),
			want:   Decision{Allowed: true, Deny: []string{}},
		},
		{
			name:   "empty request is allowed by a policy that does not match",
			policy: "package hangar.initialization\n\ndeny contains \"x\" if input.run.type == \"TASK\"\n",
			req:    &policyv1.EvaluateRequest{},
			want:   Decision{Allowed: true, Deny: []string{}},
		},
		{
			name:   "one deny",
			policy: imagePolicy,
			req:    request("docker.io/runner:1", nil, nil),
			want:   Decision{Deny: []string{`runner image "docker.io/runner:1" is not from registry.internal/`}},
		},
		{
			name:   "several denies, sorted",
			policy: imagePolicy,
			req:    request("docker.io/runner:1", []string{"frozen"}, []string{"AWS_SECRET_ACCESS_KEY", "TF_LOG"}),
			want: Decision{Deny: []string{
				"aaa: AWS_SECRET_ACCESS_KEY must not be passed to runs",
				`runner image "docker.io/runner:1" is not from registry.internal/`,
				"zzz: stack is frozen",
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := AllowAll()
			if tt.policy != "" {
				var err error
				eng, err = Load(ctx, writePolicy(t, tt.policy))
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
			}
			if got := eng.Enabled(); got != (tt.policy != "") {
				t.Errorf("Enabled() = %v", got)
			}
			got, err := eng.Evaluate(ctx, NewInput(tt.req))
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if got.Allowed != tt.want.Allowed || !slices.Equal(got.Deny, tt.want.Deny) || got.Deny == nil {
				t.Errorf("Evaluate() = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestLoadNoPolicy(t *testing.T) {
	eng, err := Load(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if eng.Enabled() || eng.File() != "" {
		t.Errorf("Load(\"\") gave an enabled engine")
	}
}

func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		// want matches the whole error text after the file name is replaced by FILE.
		want string
	}{
		{
			name:   "parse error",
			policy: "package hangar.initialization\n\ndeny contains msg if {\n\tmsg := \"x\"\n\n",
			want:   `^FILE:\d+: rego_parse_error: `,
		},
		{
			name:   "v0 syntax is a parse error",
			policy: "package hangar.initialization\n\ndeny[msg] {\n\tmsg := \"x\"\n}\n",
			want:   `^FILE:3: rego_parse_error: `,
		},
		{
			name:   "compile error: unsafe variable",
			policy: "package hangar.initialization\n\ndeny contains msg if {\n\tinput.run.id == \"x\"\n}\n",
			want:   `^FILE:3: rego_unsafe_var_error: var msg is unsafe$`,
		},
		{
			name:   "compile error: unknown function",
			policy: "package hangar.initialization\n\n\ndeny contains msg if {\n\tmsg := no_such_function(input.run.id)\n}\n",
			want:   `^FILE:5: rego_type_error: undefined function no_such_function$`,
		},
		{
			name:   "wrong package",
			policy: "# comment\npackage hangar.other\n\ndeny contains \"x\" if true\n",
			want:   `^FILE:2: hangar_policy_error: package must be hangar.initialization, got hangar.other$`,
		},
		{
			name:   "no deny rule",
			policy: "package hangar.initialization\n\nallow if true\n",
			want:   `^FILE:1: hangar_policy_error: package hangar.initialization has no deny rule`,
		},
		{
			name:   "deny is not a set",
			policy: "package hangar.initialization\n\ndeny := \"x\"\n",
			want:   `^FILE:3: hangar_policy_error: deny must be a set of strings`,
		},
		{
			name:   "deny is a function",
			policy: "package hangar.initialization\n\ndeny(x) := x\n",
			want:   `^FILE:3: hangar_policy_error: deny must be a set of strings`,
		},
		{
			name:   "empty file",
			policy: "# nothing here\n",
			want:   `^FILE:1: rego_parse_error: `,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writePolicy(t, tt.policy)
			eng, err := Load(context.Background(), path)
			if err == nil {
				t.Fatalf("Load succeeded: %#v", eng)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("error %v does not match ErrInvalidPolicy", err)
			}
			got := strings.ReplaceAll(err.Error(), path, "FILE")
			if !regexp.MustCompile(tt.want).MatchString(got) {
				t.Errorf("error:\n%s\nwant match of %s", got, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.rego")
	_, err := Load(context.Background(), path)
	if !errors.Is(err, ErrInvalidPolicy) || !strings.HasPrefix(err.Error(), path+": ") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestEvaluateErrors(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   error
		text   string
	}{
		{
			name: "conflicting rules",
			policy: `package hangar.initialization

tier := "a" if input.run.type == "TRACKED"
tier := "b" if input.stack.name == "prod"

deny contains tier if tier == "c"
`,
			want: ErrEvaluation,
			text: "eval_conflict_error",
		},
		{
			name:   "non-string deny element",
			policy: "package hangar.initialization\n\ndeny contains 42 if true\n",
			want:   ErrInvalidDeny,
			text:   "deny holds a number (42)",
		},
		{
			name:   "object deny element",
			policy: "package hangar.initialization\n\ndeny contains {\"msg\": \"x\"} if true\n",
			want:   ErrInvalidDeny,
			text:   "deny holds a object",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng, err := Compile(context.Background(), "test.rego", []byte(tt.policy))
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			_, err = eng.Evaluate(context.Background(), NewInput(request("img", nil, nil)))
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Evaluate() error = %v, want %v containing %q", err, tt.want, tt.text)
			}
		})
	}
}

// echoPolicy denies with the input document it saw, so that a test can check
// the document as the policy sees it.
const echoPolicy = "package hangar.initialization\n\ndeny contains json.marshal(input) if true\n"

func TestInputShape(t *testing.T) {
	tests := []struct {
		name string
		req  *policyv1.EvaluateRequest
		want string
	}{
		{
			name: "empty request: every key present, lists and maps empty",
			req:  &policyv1.EvaluateRequest{},
			want: `{
				"commit": {"author": "", "branch": "", "message": "", "sha": ""},
				"environment_variables": [],
				"pool_id": "",
				"run": {"commands": [], "id": "", "needs_confirmation": false, "phases": [], "type": ""},
				"runner_image": "",
				"source": {"project_root": "", "ref": "", "url": ""},
				"stack": {"id": "", "labels": [], "name": ""},
				"worker_metadata": {}
			}`,
		},
		{
			name: "full request",
			req: &policyv1.EvaluateRequest{
				Run: &policyv1.RunInput{Id: "01J", Type: "TASK", Commands: []string{"terraform state list", "ls"}, Phases: []*policyv1.PhaseInput{
					{Name: "init", Before: []string{"echo before"}},
					{Name: "perform", Commands: []string{"terraform state list", "ls"}, After: []string{"echo after"}},
				}, NeedsConfirmation: true},
				Source:               &policyv1.SourceInput{Url: "https://git.example.com/infra.git", Ref: "main", ProjectRoot: "net"},
				Stack:                &policyv1.StackInput{Id: "s1", Name: "network", Labels: []string{"frozen", "team:net"}},
				Commit:               &policyv1.CommitInput{Sha: "deadbeef", Branch: "main", Message: "bump", Author: "ada"},
				RunnerImage:          "registry.internal/runner:1.9",
				EnvironmentVariables: []string{"AWS_REGION", "TF_TOKEN"},
				WorkerMetadata:       map[string]string{"zone": "eu-1", "host": "w1"},
				PoolId:               "pool-7",
			},
			want: `{
				"commit": {"author": "ada", "branch": "main", "message": "bump", "sha": "deadbeef"},
				"environment_variables": ["AWS_REGION", "TF_TOKEN"],
				"pool_id": "pool-7",
				"run": {"commands": ["terraform state list", "ls"], "id": "01J", "needs_confirmation": true, "phases": [
					{"after": [], "before": ["echo before"], "commands": [], "name": "init"},
					{"after": ["echo after"], "before": [], "commands": ["terraform state list", "ls"], "name": "perform"}
				], "type": "TASK"},
				"runner_image": "registry.internal/runner:1.9",
				"source": {"project_root": "net", "ref": "main", "url": "https://git.example.com/infra.git"},
				"stack": {"id": "s1", "labels": ["frozen", "team:net"], "name": "network"},
				"worker_metadata": {"host": "w1", "zone": "eu-1"}
			}`,
		},
	}
	eng, err := Compile(context.Background(), "echo.rego", []byte(echoPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := NewInput(tt.req)
			direct, err := json.Marshal(input)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := eng.Evaluate(context.Background(), input)
			if err != nil {
				t.Fatal(err)
			}
			if len(dec.Deny) != 1 {
				t.Fatalf("deny = %q", dec.Deny)
			}
			want := compactJSON(t, tt.want)
			if got := string(direct); got != want {
				t.Errorf("NewInput JSON:\n got %s\nwant %s", got, want)
			}
			if got := compactJSON(t, dec.Deny[0]); got != want {
				t.Errorf("input seen by the policy:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON %s: %v", s, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestEvaluateConcurrent(t *testing.T) {
	eng, err := Compile(context.Background(), "p.rego", []byte(imagePolicy))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for i := range 8 {
		go func() {
			image := "registry.internal/r"
			if i%2 == 1 {
				image = "docker.io/r"
			}
			for range 50 {
				dec, err := eng.Evaluate(context.Background(), NewInput(request(image, nil, nil)))
				if err == nil && dec.Allowed != (i%2 == 0) {
					err = errors.New("wrong decision")
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkEvaluate(b *testing.B) {
	ctx := context.Background()
	eng, err := Compile(ctx, "bench.rego", []byte(imagePolicy))
	if err != nil {
		b.Fatal(err)
	}
	req := request("docker.io/runner:1", []string{"frozen", "team-a"}, []string{"AWS_REGION", "AWS_SECRET_ACCESS_KEY", "TF_LOG"})
	req.WorkerMetadata = map[string]string{"zone": "eu-1"}
	b.ReportAllocs()
	for b.Loop() {
		dec, err := eng.Evaluate(ctx, NewInput(req))
		if err != nil || len(dec.Deny) != 3 {
			b.Fatalf("Evaluate() = %v, %v", dec, err)
		}
	}
}
