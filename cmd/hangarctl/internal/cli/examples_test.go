package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/devshell"
)

func TestShellCommandsAreHangarSh(t *testing.T) {
	if !slices.Equal(shellCommands(), devshell.Commands()) {
		t.Errorf("shellCommands() = %q, devshell.Commands() = %q: keep them equal", shellCommands(), devshell.Commands())
	}
}

// TestDemoSpecIsTheExample: the run `hangarctl dev` submits is
// examples/runs/hello.json, whose runner image is the one dev builds, so that
// the documented example runs on the dev stack as it is.
func TestDemoSpecIsTheExample(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "examples", "runs", "hello.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(example, demoSpec) {
		t.Errorf("examples/runs/hello.json differs from cmd/hangarctl/internal/cli/demo-run.json (the spec dev submits): keep them the same")
	}
	if !bytes.Contains(example, []byte(`"runner_image": "`+devRunnerImage+`"`)) {
		t.Errorf("examples/runs/hello.json does not name %s, the image dev builds", devRunnerImage)
	}
}
