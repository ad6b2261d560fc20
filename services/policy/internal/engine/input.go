package engine

import (
	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
)

// NewInput turns an EvaluateRequest into the policy's input document, field for
// field with snake_case keys (docs/POLICY.md). Every key is always present:
// missing messages become objects of empty strings, missing lists become empty
// lists, and missing maps become empty objects, so that a policy never has to
// guard against undefined or null values.
//
// The result holds only strings, booleans, []any and map[string]any, and is
// safe to marshal to JSON.
func NewInput(req *policyv1.EvaluateRequest) map[string]any {
	run := req.GetRun()
	stack := req.GetStack()
	commit := req.GetCommit()
	src := req.GetSource()
	phases := make([]any, len(run.GetPhases()))
	for i, p := range run.GetPhases() {
		phases[i] = map[string]any{
			"name":     p.GetName(),
			"before":   stringList(p.GetBefore()),
			"commands": stringList(p.GetCommands()),
			"after":    stringList(p.GetAfter()),
		}
	}
	return map[string]any{
		"run": map[string]any{
			"id":                 run.GetId(),
			"type":               run.GetType(),
			"commands":           stringList(run.GetCommands()),
			"phases":             phases,
			"needs_confirmation": run.GetNeedsConfirmation(),
		},
		"source": map[string]any{
			"url":          src.GetUrl(),
			"ref":          src.GetRef(),
			"project_root": src.GetProjectRoot(),
		},
		"stack": map[string]any{
			"id":     stack.GetId(),
			"name":   stack.GetName(),
			"labels": stringList(stack.GetLabels()),
		},
		"commit": map[string]any{
			"sha":     commit.GetSha(),
			"branch":  commit.GetBranch(),
			"message": commit.GetMessage(),
			"author":  commit.GetAuthor(),
		},
		"runner_image":          req.GetRunnerImage(),
		"environment_variables": stringList(req.GetEnvironmentVariables()),
		"worker_metadata":       stringMap(req.GetWorkerMetadata()),
		"pool_id":               req.GetPoolId(),
	}
}

func stringList(in []string) []any {
	out := make([]any, len(in))
	for i, s := range in {
		out[i] = s
	}
	return out
}

func stringMap(in map[string]string) map[string]any {
	out := make(map[string]any, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
