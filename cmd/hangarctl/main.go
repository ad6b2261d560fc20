// Command hangarctl is the control-plane side of Hangar: it creates the control
// plane's CA, pools and their tokens, submits and follows runs, runs the embedded
// broker, and starts a whole stack on one machine (`hangarctl dev`).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code != 0 {
		os.Exit(code)
	}
}
