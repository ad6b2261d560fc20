// Package engine evaluates Hangar's run-initialization policy with OPA.
//
// A policy is a Rego v1 module in package hangar.initialization with a `deny`
// set of strings. It is parsed, checked and prepared once (Load, Compile);
// Evaluate then runs the prepared query data.hangar.initialization.deny against
// an input document built by NewInput. An Engine is safe for concurrent use.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

const (
	// Package is the package a policy must declare.
	Package = "hangar.initialization"
	// Query is the query evaluated for every decision.
	Query = "data." + Package + ".deny"
	// DenyRule is the name of the rule holding the deny messages.
	DenyRule = "deny"
)

// Decision is the outcome of one evaluation.
type Decision struct {
	// Allowed is true when the deny set is empty.
	Allowed bool
	// Deny holds the deny messages, sorted.
	Deny []string
}

// Engine evaluates one prepared policy. The zero value is not usable; build one
// with Load, Compile or AllowAll.
type Engine struct {
	// query is nil when no policy is configured: every run is allowed.
	query *rego.PreparedEvalQuery
	file  string
}

// AllowAll returns an engine without a policy, which allows every run.
func AllowAll() *Engine {
	return &Engine{}
}

// Load reads and compiles the policy file at path. An empty path means no
// policy: the engine allows every run. A file that cannot be read, parsed or
// compiled gives an error matching ErrInvalidPolicy whose text names the file
// and the row of each problem.
func Load(ctx context.Context, path string) (*Engine, error) {
	if path == "" {
		return AllowAll(), nil
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, &PolicyError{Problems: []string{path + ": " + err.Error()}}
	}
	return Compile(ctx, path, src)
}

// Compile parses, checks and prepares the policy source src; filename is used
// in error messages. See Load.
func Compile(ctx context.Context, filename string, src []byte) (*Engine, error) {
	module, err := ast.ParseModuleWithOpts(filename, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, policyError(filename, err)
	}
	if module == nil {
		// Defensive: OPA reports an empty file as a parse error already.
		return nil, &PolicyError{Problems: []string{filename + ":1: rego_parse_error: empty module"}}
	}
	if err := checkContract(filename, module); err != nil {
		return nil, err
	}
	query, err := rego.New(
		rego.Query(Query),
		rego.ParsedModule(module),
		rego.SetRegoVersion(ast.RegoV1),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, policyError(filename, err)
	}
	return &Engine{query: &query, file: filename}, nil
}

// checkContract checks the parts of the contract the compiler does not: the
// package, and a deny rule that is a set (`deny contains msg if { ... }`).
func checkContract(filename string, module *ast.Module) error {
	pkgRow := strconv.Itoa(module.Package.Location.Row)
	if got := module.Package.Path.String(); got != "data."+Package {
		return &PolicyError{Problems: []string{fmt.Sprintf(
			"%s:%s: hangar_policy_error: package must be %s, got %s",
			filename, pkgRow, Package, trimData(got))}}
	}
	found := false
	var problems []string
	for _, rule := range module.Rules {
		if rule.Head.Name.String() != DenyRule && rule.Head.Ref().String() != DenyRule {
			continue
		}
		found = true
		if len(rule.Head.Args) > 0 || rule.Head.RuleKind() != ast.MultiValue {
			problems = append(problems, fmt.Sprintf(
				"%s:%d: hangar_policy_error: deny must be a set of strings (deny contains msg if { ... })",
				filename, rule.Location.Row))
		}
	}
	if !found {
		problems = append(problems, fmt.Sprintf(
			"%s:%s: hangar_policy_error: package %s has no deny rule (deny contains msg if { ... })",
			filename, pkgRow, Package))
	}
	if len(problems) > 0 {
		return &PolicyError{Problems: problems}
	}
	return nil
}

// trimData turns "data.a.b" into "a.b".
func trimData(path string) string {
	const prefix = "data."
	if len(path) > len(prefix) && path[:len(prefix)] == prefix {
		return path[len(prefix):]
	}
	return path
}

// policyError turns OPA's parse and compile errors into a PolicyError with one
// "file:row: code: message" line per problem.
func policyError(filename string, err error) error {
	var problems []string
	var collect func(error)
	collect = func(err error) {
		var astErrs ast.Errors
		var astErr *ast.Error
		var regoErrs rego.Errors
		switch {
		case errors.As(err, &astErrs):
			for _, e := range astErrs {
				problems = append(problems, formatASTError(filename, e))
			}
		case errors.As(err, &regoErrs):
			for _, e := range regoErrs {
				collect(e)
			}
		case errors.As(err, &astErr):
			problems = append(problems, formatASTError(filename, astErr))
		default:
			problems = append(problems, filename+": "+err.Error())
		}
	}
	collect(err)
	return &PolicyError{Problems: problems}
}

// formatASTError formats e as "file:row: code: message". OPA's own format
// drops the file name when a location has none; this one always names it.
func formatASTError(filename string, e *ast.Error) string {
	if e.Location == nil {
		return filename + ": " + e.Error()
	}
	if e.Location.File != "" && e.Location.Row > 0 {
		return e.Error()
	}
	// Always name the file, and never report row 0 (OPA's "empty module").
	fixed := *e
	loc := *e.Location
	if loc.File == "" {
		loc.File = filename
	}
	loc.Row = max(loc.Row, 1)
	fixed.Location = &loc
	return fixed.Error()
}

// Enabled reports whether a policy is configured. Without one every run is
// allowed.
func (e *Engine) Enabled() bool {
	return e.query != nil
}

// File returns the policy's file name, or "" when no policy is configured.
func (e *Engine) File() string {
	return e.file
}

// Evaluate evaluates the policy against input (see NewInput). It returns an
// error matching ErrEvaluation when the evaluation fails and ErrInvalidDeny when
// the deny set holds something other than strings; no decision was made then.
func (e *Engine) Evaluate(ctx context.Context, input map[string]any) (Decision, error) {
	if e.query == nil {
		return Decision{Allowed: true, Deny: []string{}}, nil
	}
	// Converting here rather than with rego.EvalInput skips a JSON round trip
	// of the input: NewInput builds only JSON-shaped values.
	value, err := ast.InterfaceToValue(input)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: convert input: %w", ErrEvaluation, err)
	}
	results, err := e.query.Eval(ctx, rego.EvalParsedInput(value))
	if err != nil {
		return Decision{}, fmt.Errorf("%w: %w", ErrEvaluation, err)
	}
	deny, err := denySet(results)
	if err != nil {
		return Decision{}, err
	}
	return Decision{Allowed: len(deny) == 0, Deny: deny}, nil
}

// denySet extracts the sorted deny messages from the query's results.
func denySet(results rego.ResultSet) ([]string, error) {
	deny := []string{}
	if len(results) == 0 || len(results[0].Expressions) == 0 {
		// A set rule is always defined; treat undefined as empty anyway.
		return deny, nil
	}
	value := results[0].Expressions[0].Value
	elems, ok := value.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: deny is a %s, not a set", ErrInvalidDeny, jsonType(value))
	}
	for _, elem := range elems {
		msg, ok := elem.(string)
		if !ok {
			return nil, fmt.Errorf("%w: deny holds a %s (%v)", ErrInvalidDeny, jsonType(elem), elem)
		}
		deny = append(deny, msg)
	}
	slices.Sort(deny)
	return deny, nil
}

// jsonType names the JSON type of a value produced by OPA.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return "number"
	}
}
