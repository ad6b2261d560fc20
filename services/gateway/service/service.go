// Package service runs the gateway inside another process, configured exactly
// as the gateway binary is by its environment (etcd's embed, in spirit). It is
// how `hangarctl dev` starts a whole pool in one process.
package service

import (
	"context"
	"log/slog"

	"github.com/hangar-dev/hangar/platform/envconfig"
	"github.com/hangar-dev/hangar/services/gateway/internal/app"
	"github.com/hangar-dev/hangar/services/gateway/internal/config"
)

// Run runs the gateway with the configuration env (variable name to value)
// until ctx ends.
func Run(ctx context.Context, env map[string]string, log *slog.Logger) error {
	cfg, err := config.Load(envconfig.FromMap(env))
	if err != nil {
		return err
	}
	return app.Run(ctx, cfg, log)
}
