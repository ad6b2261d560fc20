// Command logship receives the output of runs from executors, masks every
// secret value of the run in it, spools it durably and writes it to S3: live
// chunks while the run goes on, one final object when it ends. It also
// serves the masked logs to readers (Tail). Logs longer than
// HANGAR_LOG_MAX_BYTES keep their head and tail. With
// HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT=true every masked line of every run is
// also written to standard output as JSON (logship's own logs go to
// standard error). Configuration is read from the environment; see
// internal/config.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/services/logship/internal/app"
	"github.com/hangar-dev/hangar/services/logship/internal/config"
)

func main() {
	cfg, err := config.Load(envconfig.FromOS())
	if err != nil {
		fmt.Fprintf(os.Stderr, "logship: configuration: %v\n", err)
		os.Exit(2)
	}
	log := app.NewLogger(cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, log, os.Stdout); err != nil {
		log.Error("logship stopped", "err", err)
		stop()
		os.Exit(1)
	}
}
