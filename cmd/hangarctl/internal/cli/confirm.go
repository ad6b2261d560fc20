package cli

import (
	"context"
	"fmt"
	"time"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// runConfirm sends ConfirmRun: a tracked run that stopped for confirmation
// (`run submit --follow` printed "unconfirmed" and exited 3) resumes with its
// apply phase from its stored workspace. A pool that does not have the run
// waiting for confirmation refuses it, and the command exits 1 saying why.
func runConfirm(ctx context.Context, e env) error {
	cmd, dir, pool, wait, err := parseConfirm(e)
	if err != nil {
		return err
	}
	return sendCommand(ctx, dir, pool, cmd, wait, e.stdout)
}

// parseConfirm reads `run confirm`'s arguments into the command to send.
func parseConfirm(e env) (*eventv1.Command, string, string, time.Duration, error) {
	fs := newFlags("run confirm", e)
	dir := fs.String("dir", "", "control-plane directory")
	pool := fs.String("pool", "", "pool name")
	wait := answerTimeoutFlag(fs)
	if err := parseFlags(fs, e, 1); err != nil {
		return nil, "", "", 0, err
	}
	if *dir == "" || *pool == "" || fs.NArg() != 1 || fs.Arg(0) == "" {
		return nil, "", "", 0, fmt.Errorf("%w: usage: hangarctl run confirm --dir DIR --pool NAME RUN_ID", errUsage)
	}
	cmd := &eventv1.Command{Kind: &eventv1.Command_Confirm{Confirm: &eventv1.ConfirmRun{RunId: fs.Arg(0)}}}
	return cmd, *dir, *pool, *wait, nil
}
