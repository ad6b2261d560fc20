package e2e

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	tmpRoot, err = os.MkdirTemp("", "hangar-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	code := m.Run()
	if theStack != nil {
		theStack.stop()
	}
	if baseStack != nil {
		baseStack.stop()
	}
	if code != 0 || os.Getenv("HANGAR_BENCH_KEEP_DIR") != "" {
		// The stack's directory has every service's log (dev/logs).
		fmt.Fprintf(os.Stderr, "bench: kept %s (hangarctl dev output in hangarctl-dev.out, service logs in dev/logs)\n", tmpRoot)
	} else {
		os.RemoveAll(tmpRoot)
	}
	return code
}
