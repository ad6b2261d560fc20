// Command hangar-relay is the entrypoint of a Hangar run container (see
// package relay and ADR 0016): `hangar-relay SOCKET COMMAND [ARG...]` runs the
// command and relays its stdout and stderr to the executor listening on the
// unix socket SOCKET, keeping every byte until the executor has stored it,
// and exits with the command's exit code. It is built static (no cgo, no
// package net) so that the executor can bind-mount it into any image.
package main

import (
	"fmt"
	"os"

	"github.com/hangar-dev/hangar/services/executor/internal/relay"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: hangar-relay SOCKET COMMAND [ARG...]")
		os.Exit(2)
	}
	s := &relay.Shim{Socket: os.Args[1]}
	os.Exit(s.Run(os.Args[2:]))
}
