package dockerrt

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hangar-dev/hangar/services/executor/internal/wsarchive"
)

// TestExportCarriesTheWorkspaceOfPlan: a job narrowed to init and plan
// exports the volume, with what plan wrote, before the runtime removes it;
// apply does not run.
func TestExportCarriesTheWorkspaceOfPlan(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, engine(t), Options{})
	tj := newJob(
		phase("init", "mkdir -p .terraform", "echo provider > .terraform/lock"),
		phase("plan", "echo 'plan: 1 to add' > plan.out", "ln -s plan.out latest"),
		phase("apply", "echo applied"),
	)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.tf"), []byte("resource"), 0o644); err != nil {
		t.Fatal(err)
	}
	tj.Workspace = src
	tj.Phases = []string{"init", "plan"}
	var archive bytes.Buffer
	tj.ExportTo = &archive
	res := runJob(t, rt, tj)
	wantFinished(t, res, tj)
	if got := tj.startedPhases(); !slices.Equal(got, []string{"init", "plan"}) {
		t.Fatalf("phases = %v", got)
	}
	dst := t.TempDir()
	if err := wsarchive.Extract(&archive, dst, 0); err != nil {
		t.Fatalf("extract the export: %v", err)
	}
	for name, want := range map[string]string{"plan.out": "plan: 1 to add\n", ".terraform/lock": "provider\n", "main.tf": "resource", "latest": "plan: 1 to add\n"} {
		if got, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
}
