// Command executor runs a pool's runs on this host, in Docker containers (or as
// local processes), taking them from the gateway under leases. The first SIGTERM
// or SIGINT drains it (running runs finish, nothing new starts); a second one
// cancels the running runs with their grace period. Configuration is read from
// the environment; see the README's table.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hangar-dev/hangar/services/executor/internal/app"
	"github.com/hangar-dev/hangar/services/executor/internal/config"
)

func main() {
	cfg, err := config.Load(os.LookupEnv, os.Environ)
	if err != nil {
		fmt.Fprintf(os.Stderr, "executor: configuration: %v\n", err)
		os.Exit(2)
	}
	log := app.NewLogger(cfg.LogLevel)

	drain, cancel := make(chan struct{}), make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		close(drain)
		<-sigs
		close(cancel)
	}()
	if err := app.Run(context.Background(), cfg, app.Signals{Drain: drain, Cancel: cancel}, log); err != nil {
		log.Error("executor stopped", "err", err)
		os.Exit(1)
	}
}
