// Package service runs logship inside another process, configured exactly as
// the logship binary is by its environment. It is how `hangarctl dev` starts a
// whole pool in one process.
package service

import (
	"context"
	"log/slog"
	"os"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/services/logship/internal/app"
	"github.com/hangar-dev/hangar/services/logship/internal/config"
)

// Run runs logship with the configuration env until ctx ends. With
// HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT=true the runs' masked lines go to this
// process's standard output.
func Run(ctx context.Context, env map[string]string, log *slog.Logger) error {
	cfg, err := config.Load(envconfig.FromMap(env))
	if err != nil {
		return err
	}
	return app.Run(ctx, cfg, log, os.Stdout)
}
