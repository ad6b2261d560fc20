// Command policy is Hangar's policy service: it evaluates the operator's
// run-initialization policy (HANGAR_RUN_INITIALIZATION_POLICY, Rego) for the
// gateway over gRPC. See docs/POLICY.md.
//
// It exits with status 2 on a configuration error and 1 when it cannot start
// (an invalid policy among others) or fails; the reason goes to stderr.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/services/policy/internal/app"
	"github.com/hangar-dev/hangar/services/policy/internal/config"
)

func main() {
	cfg, err := config.Load(envconfig.FromOS())
	if err != nil {
		fmt.Fprintf(os.Stderr, "policy: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel})).With("service", "policy")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, app.Deps{Logger: log}); err != nil {
		stop()
		fmt.Fprintf(os.Stderr, "policy: %v\n", err)
		os.Exit(1)
	}
}
