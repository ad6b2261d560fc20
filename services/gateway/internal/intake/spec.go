package intake

import (
	"fmt"
	"slices"
	"strings"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/runenvelope"
)

// PhasesOf returns the phases a run of type t may have, in the order they
// run; nil for an unknown type. This is run.proto's RunType contract.
func PhasesOf(t runv1.RunType) []string {
	switch t {
	case runv1.RunType_RUN_TYPE_PROPOSED:
		return []string{"init", "plan"}
	case runv1.RunType_RUN_TYPE_TRACKED:
		return []string{"init", "plan", "apply"}
	case runv1.RunType_RUN_TYPE_TASK:
		return []string{"init", "perform"}
	}
	return nil
}

// ValidateSpec checks what a run will execute against its type, before the
// policy sees it and before anything runs: the type is known; there is at
// least one phase and at least one line to run; each phase's name is one of
// the type's phases, at most once, in the type's order. Its messages never
// quote decrypted content other than the fixed phase names: a phase with an
// unknown name is named by its position.
func ValidateSpec(spec *runv1.RunSpec) error {
	t := spec.GetType()
	allowed := PhasesOf(t)
	typ := strings.TrimPrefix(t.String(), "RUN_TYPE_")
	if allowed == nil {
		return fmt.Errorf("type %s is not a run type: want RUN_TYPE_PROPOSED, RUN_TYPE_TRACKED or RUN_TYPE_TASK", t)
	}
	want := fmt.Sprintf("(a %s run has %s, in this order)", typ, strings.Join(allowed, ", "))
	if len(spec.GetPhases()) == 0 {
		return fmt.Errorf("phases: empty, nothing would run %s", want)
	}
	last, lines := -1, 0
	seen := map[string]int{}
	for i, p := range spec.GetPhases() {
		at := slices.Index(allowed, p.GetName())
		switch {
		case at < 0:
			return fmt.Errorf("phases[%d]: its name is not a phase of a %s run %s", i, typ, want)
		case seen[p.GetName()] > 0:
			return fmt.Errorf("phases[%d]: %q appears twice (also phases[%d]) %s", i, p.GetName(), seen[p.GetName()]-1, want)
		case at < last:
			return fmt.Errorf("phases[%d]: %q comes after %q %s", i, p.GetName(), allowed[last], want)
		}
		seen[p.GetName()] = i + 1
		last = at
		lines += len(p.GetBefore()) + len(p.GetCommands()) + len(p.GetAfter())
	}
	if lines == 0 {
		return fmt.Errorf("phases: no phase has a line to run (before, commands or after)")
	}
	return nil
}

// validSpec is ValidateSpec as a rejection of the run's envelope: the
// control plane learns why, and nothing of the run starts.
func validSpec(runID string, spec *runv1.RunSpec) error {
	if err := ValidateSpec(spec); err != nil {
		return &runenvelope.RejectError{
			Reason: eventv1.RejectReason_REJECT_REASON_MALFORMED, RunID: runID, SignatureValid: true,
			Detail: "invalid run spec: " + err.Error(),
		}
	}
	return nil
}
