// Command hangar-sh is the shell of the dev stack's runner image (package
// devshell). `hangarctl dev` builds it with CGO_ENABLED=0 and imports it as
// /bin/sh of an image FROM scratch.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/devshell"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := devshell.Main(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
