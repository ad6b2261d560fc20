// Package service runs an executor inside another process, configured exactly
// as the executor binary is by its environment. It is how `hangarctl dev`
// starts a whole pool in one process.
package service

import (
	"context"
	"log/slog"
	"maps"
	"slices"

	"github.com/hangar-dev/hangar/services/executor/internal/app"
	"github.com/hangar-dev/hangar/services/executor/internal/config"
)

// Run runs an executor with the configuration env until ctx ends. Runs still
// going on then are cancelled with their grace period first.
func Run(ctx context.Context, env map[string]string, log *slog.Logger) error {
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	environ := func() []string {
		var out []string
		for _, k := range slices.Sorted(maps.Keys(env)) {
			out = append(out, k+"="+env[k])
		}
		return out
	}
	cfg, err := config.Load(lookup, environ)
	if err != nil {
		return err
	}
	drain, cancel := make(chan struct{}), make(chan struct{})
	go func() {
		<-ctx.Done()
		close(drain)
		close(cancel)
	}()
	return app.Run(context.WithoutCancel(ctx), cfg, app.Signals{Drain: drain, Cancel: cancel}, log)
}
