// Command gateway holds a pool's MQTT session with its control plane, admits runs
// under the operator's policy, and hands them to the executors that attach to it.
// Configuration is read from the environment; see the README's table.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/services/gateway/internal/app"
	"github.com/hangar-dev/hangar/services/gateway/internal/config"
)

func main() {
	cfg, err := config.Load(envconfig.FromOS())
	if err != nil {
		fmt.Fprintf(os.Stderr, "gateway: configuration: %v\n", err)
		os.Exit(2)
	}
	log := app.NewLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("gateway stopped", "err", err)
		stop()
		os.Exit(1)
	}
}
