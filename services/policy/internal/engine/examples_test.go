package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	"github.com/open-policy-agent/opa/v1/tester"
)

// docsDir is the repository's docs directory, seen from this package.
const docsDir = "../../../../docs"

// examplePolicies returns the directories of the example policies in
// docs/policies: each holds policy.rego and its Rego tests.
func examplePolicies(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(docsDir, "policies", "*", "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no example policies under %s/policies", docsDir)
	}
	for i, p := range dirs {
		dirs[i] = filepath.Dir(p)
	}
	return dirs
}

// TestExamplePolicyRegoTests runs the Rego tests of each example policy, as
// `opa test docs/policies/<name>` would, without an opa binary. Each directory
// is run on its own: every example declares package hangar.initialization, so
// loading them together would merge their deny rules.
func TestExamplePolicyRegoTests(t *testing.T) {
	for _, dir := range examplePolicies(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			passed, failed, err := runRegoTests(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range failed {
				t.Error(f)
			}
			if len(passed)+len(failed) == 0 {
				t.Errorf("no Rego tests (test_ rules) found in %s", dir)
			}
			t.Logf("%d Rego tests passed: %s", len(passed), strings.Join(passed, ", "))
		})
	}
}

// TestRunRegoTestsReportsFailures checks the harness itself: a failing Rego
// test and a Rego test that errors are reported.
func TestRunRegoTestsReportsFailures(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"policy.rego": "package hangar.initialization\n\ndeny contains \"no\" if input.x\n",
		"policy_test.rego": `package hangar.initialization_test

import data.hangar.initialization

test_passes if count(initialization.deny) == 1 with input as {"x": true}

test_fails if count(initialization.deny) == 0 with input as {"x": true}

test_errors if 1 / 0 == 1
`,
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	passed, failed, err := runRegoTests(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(passed) != 1 || len(failed) != 2 {
		t.Errorf("passed %q, failed %q; want 1 and 2", passed, failed)
	}
}

// runRegoTests runs the Rego tests (test_ rules) of the .rego files in dir and
// returns the names of those that passed and a description of each failure.
func runRegoTests(ctx context.Context, dir string) (passed, failed []string, err error) {
	modules, store, err := tester.Load([]string{dir}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", dir, err)
	}
	ch, err := tester.NewRunner().SetStore(store).Run(ctx, modules)
	if err != nil {
		return nil, nil, fmt.Errorf("run tests in %s: %w", dir, err)
	}
	for r := range ch {
		name := r.Package + "." + r.Name
		if r.Pass() {
			passed = append(passed, r.Name)
			continue
		}
		msg := fmt.Sprintf("%s: %s: %s", r.Location, name, failure(r))
		if r.Error != nil {
			msg += ": " + r.Error.Error()
		}
		failed = append(failed, msg)
	}
	return passed, failed, nil
}

func failure(r *tester.Result) string {
	switch {
	case r.Skip:
		return "SKIPPED"
	case r.Error != nil:
		return "ERROR"
	default:
		return "FAIL"
	}
}

// TestExamplePoliciesLoad checks that each example loads in the service's
// engine, and evaluates it on the documented example input.
func TestExamplePoliciesLoad(t *testing.T) {
	input := exampleInput(t)
	for _, dir := range examplePolicies(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			eng, err := Load(context.Background(), filepath.Join(dir, "policy.rego"))
			if err != nil {
				t.Fatal(err)
			}
			dec, err := eng.Evaluate(context.Background(), input)
			if err != nil {
				t.Fatal(err)
			}
			// The example input is a task on a frozen stack, from main, with an
			// allowed image: every example allows it.
			if !dec.Allowed {
				t.Errorf("example input denied: %q", dec.Deny)
			}
		})
	}
}

func exampleInput(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(docsDir, "policies", "input.example.json"))
	if err != nil {
		t.Fatal(err)
	}
	var input map[string]any
	if err := json.Unmarshal(raw, &input); err != nil {
		t.Fatal(err)
	}
	return input
}

// TestExampleInputMatchesService checks that the documented example input is
// exactly what NewInput builds from the matching request, and that
// docs/POLICY.md shows that same document.
func TestExampleInputMatchesService(t *testing.T) {
	req := &policyv1.EvaluateRequest{
		Run: &policyv1.RunInput{
			Id: "01JQ7ZK4T9M2X8V3N6B5C1D0EF", Type: "TASK", Commands: []string{"terraform state list"},
			Phases: []*policyv1.PhaseInput{
				{Name: "init", Commands: []string{"terraform init -input=false"}},
				{Name: "perform", Before: []string{"echo listing the state"}, Commands: []string{"terraform state list"}, After: []string{"echo done"}},
			},
		},
		Source: &policyv1.SourceInput{Url: "https://git.example.com/acme/infra.git", Ref: "main", ProjectRoot: "network"},
		Stack: &policyv1.StackInput{
			Id: "network-prod", Name: "Network (production)", Labels: []string{"team:network", "frozen"},
		},
		Commit: &policyv1.CommitInput{
			Sha: "4b825dc642cb6eb9a060e54bf8d69288fbee4904", Branch: "main",
			Message: "Add a subnet for the new cluster", Author: "Ada Lovelace",
		},
		RunnerImage:          "registry.example.com/runner/terraform:1.9",
		EnvironmentVariables: []string{"AWS_REGION", "TF_VAR_cluster_name"},
		WorkerMetadata:       map[string]string{"zone": "eu-west-1a", "host": "worker-3"},
		PoolId:               "pool-eu-1",
	}
	built, err := json.Marshal(NewInput(req))
	if err != nil {
		t.Fatal(err)
	}
	documented, err := json.Marshal(exampleInput(t))
	if err != nil {
		t.Fatal(err)
	}
	if string(built) != string(documented) {
		t.Errorf("docs/policies/input.example.json differs from NewInput:\n doc %s\n got %s", documented, built)
	}

	md, err := os.ReadFile(filepath.Join(docsDir, "POLICY.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```json\n(.*?)```").FindSubmatch(md)
	if m == nil {
		t.Fatal("docs/POLICY.md has no ```json block")
	}
	var inDoc any
	if err := json.Unmarshal(m[1], &inDoc); err != nil {
		t.Fatalf("first JSON block of docs/POLICY.md: %v", err)
	}
	shown, _ := json.Marshal(inDoc)
	if string(shown) != string(documented) {
		t.Errorf("the input shown in docs/POLICY.md differs from docs/policies/input.example.json:\n md   %s\n json %s", shown, documented)
	}
}
