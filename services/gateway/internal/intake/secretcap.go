package intake

import (
	"fmt"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

// MaxSecretBytes caps the total bytes of a run's secret values (its env
// variables marked secret). Logship builds its masker from them and
// refuses a run over the same cap (runlog.MaxSecretBytes, which also
// counts the executor's HANGAR_MASK_ENVS values); a run over it fails
// here, at intake, with the reason, before it takes a slot.
const MaxSecretBytes = 256 << 10

// checkSecretBytes returns the reason a spec's secrets are refused, or nil.
// The reason names the sizes, never a value.
func checkSecretBytes(spec *runv1.RunSpec) error {
	total, n := 0, 0
	for _, e := range spec.GetEnv() {
		if e.GetSecret() {
			total += len(e.GetValue())
			n++
		}
	}
	if total > MaxSecretBytes {
		return fmt.Errorf("the run's %d secret values total %d bytes, over the cap of %d bytes per run (logship masks at most that much)",
			n, total, MaxSecretBytes)
	}
	return nil
}
