// Command hangar-relay is the entrypoint of a Hangar run container (see
// package relay and ADRs 0016 and 0020):
//
//	hangar-relay [--separate-stderr] SOCKET COMMAND [ARG...]
//	hangar-relay --hold
//
// runs the command and relays its output to the executor listening on the
// unix socket SOCKET, keeping every byte until the executor has stored it,
// and exits with the command's exit code (128+signal when a signal killed
// it). It is the container's init (PID 1, no docker-init): it passes
// SIGTERM, SIGINT, SIGHUP and SIGQUIT on to the command's process group,
// reaps every process that ends in the container, and exits when the
// command has exited, even if processes it left behind remain (the kernel
// kills them with the container's init). The command's stdout and stderr
// share one pipe (in write order, like a terminal) unless --separate-stderr
// is given. It is built static (no cgo, no package net) so that the executor
// can bind-mount it into any image.
//
// With --hold it does nothing until SIGTERM or SIGINT: the entrypoint of a
// network holder, a container that only keeps its network namespace for the
// phases of one run to join (package dockerrt).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hangar-dev/hangar/services/executor/internal/relay"
)

// separateStderrFlag is the relay's only option; it comes first.
const separateStderrFlag = "--separate-stderr"

// holdFlag makes the relay a network holder's entrypoint.
const holdFlag = "--hold"

func main() {
	args := os.Args[1:]
	if len(args) == 1 && args[0] == holdFlag {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		return
	}
	separate := len(args) > 0 && args[0] == separateStderrFlag
	if separate {
		args = args[1:]
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hangar-relay ["+separateStderrFlag+"] SOCKET COMMAND [ARG...] | hangar-relay "+holdFlag)
		os.Exit(2)
	}
	s := &relay.Shim{Socket: args[0], SeparateStderr: separate, Init: true}
	os.Exit(s.Run(args[1:]))
}
