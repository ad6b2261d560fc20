package app

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/services/executor/internal/config"
)

// TestStartRefusesEngineMounts: the executor stops at start, before it
// contacts anything, when HANGAR_WORKER_EXTRA_MOUNTS exposes an engine
// socket, with the variable and the socket in the error.
func TestStartRefusesEngineMounts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	link := filepath.Join(dir, "engine.sock")
	if err := os.Symlink("/var/run/docker.sock", link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ mounts, want string }{
		{"/var/run:/host-run", "which holds the Docker socket"},
		{link + ":/s", "Docker socket"},
		{"/.:/host:ro", "the host's root directory"},
	} {
		env := map[string]string{
			"HANGAR_EXECUTOR_ID": "e-mounts", "HANGAR_WORKER_EXTRA_MOUNTS": tc.mounts, "HANGAR_EXECUTOR_WORK_DIR": dir,
			"HANGAR_GATEWAY_ADDR": "127.0.0.1:1", "HANGAR_LOGSHIP_ADDR": "127.0.0.1:1",
		}
		cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, func() []string { return nil })
		if err != nil {
			t.Fatal(err)
		}
		err = Run(context.Background(), cfg, Signals{}, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "HANGAR_WORKER_EXTRA_MOUNTS") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mounts %s: Run = %v, want an error naming HANGAR_WORKER_EXTRA_MOUNTS and %q", tc.mounts, err, tc.want)
		}
	}
}
