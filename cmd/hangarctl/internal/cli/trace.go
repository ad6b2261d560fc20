package cli

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/tracefile"
)

// runTrace draws a run's trace again from the dev directory.
func runTrace(_ context.Context, e env) error {
	fs := newFlags("trace", e)
	dir := fs.String("dir", "", "the dev directory (hangarctl dev --dir), or its control-plane directory")
	withUsage(fs, e, "trace --dir DIR RUN_ID", "Draws the trace of run RUN_ID that hangarctl dev kept in DIR/traces/RUN_ID.json (OTLP JSON), as a waterfall.")
	if err := parseFlags(fs, e, 1); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 1 {
		return fmt.Errorf("%w: hangarctl trace --dir DIR RUN_ID (DIR is hangarctl dev's directory, which it prints first)", errUsage)
	}
	devDir := devDirOf(*dir)
	path := tracefile.Path(devDir, fs.Arg(0))
	req, err := tracefile.Read(path)
	if errors.Is(err, iofs.ErrNotExist) {
		var runs []string
		entries, _ := os.ReadDir(filepath.Dir(path))
		for _, en := range entries {
			if r, ok := strings.CutSuffix(en.Name(), ".json"); ok {
				runs = append(runs, r)
			}
		}
		have := "it holds none: is DIR the directory hangarctl dev printed?"
		if len(runs) > 0 {
			have = "it holds the traces of " + strings.Join(runs, ", ")
		}
		return fmt.Errorf("no trace of run %s in %s (hangarctl dev keeps there the trace of each demo run it makes): %s", fs.Arg(0), filepath.Dir(path), have)
	}
	if err != nil {
		return fmt.Errorf("trace of run %s: %w", fs.Arg(0), err)
	}
	spans := tracefile.Spans(req)
	traceID := ""
	if len(spans) > 0 {
		traceID = spans[0].TraceID
	}
	tracefile.Draw(e.stdout, traceID, spans, 30)
	return nil
}

// devDirOf is the dev directory for dir: dir itself, or its parent when dir
// is the dev stack's control-plane directory.
func devDirOf(dir string) string {
	if filepath.Base(filepath.Clean(dir)) == "control-plane" {
		if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Clean(dir)), "traces")); err == nil {
			return filepath.Dir(filepath.Clean(dir))
		}
	}
	return dir
}
