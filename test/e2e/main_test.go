package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// bins builds the repository's binaries: hangarctl, gateway and policy once in
// TestMain; executor and logship only when a test asks for them.
var bins *harness.Binaries

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := harness.FindRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "hangar-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins = harness.NewBinaries(root, dir)
	if err := bins.Build("hangarctl", "gateway", "policy"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}
