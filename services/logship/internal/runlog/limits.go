package runlog

import (
	"fmt"

	"github.com/hangar-dev/hangar/services/logship/internal/mask"
)

// MaxSecretBytes caps the total bytes of a run's secret values (those of
// its spec and the executor's HANGAR_MASK_ENVS together): the masker's
// cap (mask.MaxSecretBytes), which bounds the memory of a run's masking.
// An Open over it is refused with ErrSecretsTooLarge, before any masker is
// built. The gateway refuses a run spec over the same cap at intake (its
// secrets alone), with the reason in the run's finished event; this is the
// defence in depth.
const MaxSecretBytes = mask.MaxSecretBytes

// checkSecretBytes refuses secrets whose values total more than
// MaxSecretBytes. The error names the cap and the total, never a value.
func checkSecretBytes(secrets []Secret) error {
	total := 0
	for _, s := range secrets {
		total += len(s.Value)
	}
	if total > MaxSecretBytes {
		return fmt.Errorf("%w: %d secrets of %d bytes in all, the cap is %d bytes per run", ErrSecretsTooLarge,
			len(secrets), total, MaxSecretBytes)
	}
	return nil
}
