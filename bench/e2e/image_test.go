package e2e

import (
	"context"
	"sync"
	"time"

	"github.com/hangar-dev/hangar/platform/runimage"
)

// benchImage is the runner image of every benchmark run, Hangar's and Docker's
// alike: the host's static busybox, imported with `docker import` (no registry).
const benchImage = "hangar-bench/busybox:latest"

var imageOnce = sync.OnceValue(ensureImage)

// ensureImage imports benchImage unless the engine has it, with the builder
// `hangarctl dev` and the tests use (platform/runimage).
func ensureImage() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fs, err := runimage.Busybox(nil)
	if err != nil {
		return err
	}
	_, err = runimage.Ensure(ctx, runimage.CLI{}, benchImage, fs)
	return err
}
