package intake

import (
	"net/url"
	"sort"
	"strings"

	policyv1 "github.com/hangar-dev/hangar/gen/go/hangar/policy/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

// PolicyInput builds the policy request of a run: everything the run will
// execute (every phase with its hooks, the runner image, the source) and
// nothing secret (environment variable names only, the source URL without
// credentials). See proto/hangar/policy/v1/policy.proto.
func PolicyInput(runID, poolID string, spec *runv1.RunSpec, metadata map[string]string) *policyv1.EvaluateRequest {
	names := make([]string, 0, len(spec.GetEnv()))
	for _, e := range spec.GetEnv() {
		names = append(names, e.GetName())
	}
	sort.Strings(names)
	var commands []string
	phases := make([]*policyv1.PhaseInput, 0, len(spec.GetPhases()))
	for _, p := range spec.GetPhases() {
		if p.GetName() == "perform" {
			commands = append(commands, p.GetCommands()...)
		}
		phases = append(phases, &policyv1.PhaseInput{
			Name: p.GetName(), Before: p.GetBefore(), Commands: p.GetCommands(), After: p.GetAfter(),
		})
	}
	src := spec.GetSource()
	return &policyv1.EvaluateRequest{
		Run: &policyv1.RunInput{
			Id:                runID,
			Type:              strings.TrimPrefix(spec.GetType().String(), "RUN_TYPE_"),
			Commands:          commands,
			Phases:            phases,
			NeedsConfirmation: spec.GetNeedsConfirmation(),
		},
		Stack: &policyv1.StackInput{Id: spec.GetStack().GetId(), Name: spec.GetStack().GetName(), Labels: spec.GetStack().GetLabels()},
		Commit: &policyv1.CommitInput{
			Sha: spec.GetCommit().GetSha(), Branch: spec.GetCommit().GetBranch(),
			Message: spec.GetCommit().GetMessage(), Author: spec.GetCommit().GetAuthor(),
		},
		RunnerImage:          spec.GetRunnerImage(),
		EnvironmentVariables: names,
		WorkerMetadata:       metadata,
		PoolId:               poolID,
		Source:               &policyv1.SourceInput{Url: sourceURLForPolicy(src.GetUrl()), Ref: src.GetRef(), ProjectRoot: src.GetProjectRoot()},
	}
}

// sourceURLForPolicy removes what may be a credential from a repository URL:
// the user information, the query and the fragment of a URL
// ("https://token@host/x.git?private_token=..."), and the user of an scp-like
// address ("git@host:x.git" -> "host:x.git"). A URL that does not parse is
// withheld: "".
func sourceURLForPolicy(raw string) string {
	if raw == "" {
		return ""
	}
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return ""
		}
		u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
		return u.String()
	}
	// scp-like: [user[:password]@]host:path; the user part ends at the
	// last "@" before the path's first "/".
	head := raw
	if i := strings.Index(raw, "/"); i >= 0 {
		head = raw[:i]
	}
	if i := strings.LastIndex(head, "@"); i >= 0 {
		raw = raw[i+1:]
	}
	if q := strings.IndexAny(raw, "?#"); q >= 0 {
		raw = raw[:q]
	}
	return raw
}
