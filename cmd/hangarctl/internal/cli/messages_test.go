package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/s3server"
	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
)

// devLayout makes a directory laid out as `hangarctl dev --dir D` leaves it:
// D/control-plane (a control plane) with its s3.json naming a live S3 server.
func devLayout(t *testing.T) (devDir, endpoint string) {
	t.Helper()
	devDir = t.TempDir()
	mustPoolCLI(t, "ca", "init", "--dir", filepath.Join(devDir, "control-plane"))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := s3server.Start(ctx, s3server.Config{Addr: "127.0.0.1:0", AccessKey: "AKIDTEST", SecretKey: "secret-test", Buckets: []string{"hangar-logs"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := S3Config{Endpoint: srv.Endpoint(), Bucket: "hangar-logs", Region: "us-east-1", AccessKey: "AKIDTEST", SecretKey: "secret-test", PathStyle: true}
	if err := cfg.Save(filepath.Join(devDir, "control-plane")); err != nil {
		t.Fatal(err)
	}
	return devDir, srv.Endpoint()
}

// TestMessagesNameTheFix: each message a user meets for these mistakes says
// what was wrong and what to do (testdata/*.golden; go test -update
// rewrites them). Paths and addresses are replaced by $DIR, $TMP and $S3.
func TestMessagesNameTheFix(t *testing.T) {
	devDir, endpoint := devLayout(t)
	empty := t.TempDir()
	spec := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(spec, demoSpec, 0o600); err != nil {
		t.Fatal(err)
	}
	stopped := t.TempDir()
	mustPoolCLI(t, "ca", "init", "--dir", stopped)
	if err := (S3Config{Endpoint: "http://127.0.0.1:1", Bucket: "hangar-logs", Region: "us-east-1", AccessKey: "a", SecretKey: "b", PathStyle: true}).Save(stopped); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"logs-unknown-run", []string{"logs", "--dir", devDir, "run-0123456789abcdef"}, 1},
		{"logs-s3-down", []string{"logs", "--dir", stopped, "run-0123456789abcdef"}, 1},
		{"logs-not-a-control-plane", []string{"logs", "--dir", empty, "run-0123456789abcdef"}, 1},
		{"logs-help", []string{"logs", "-h"}, 0},
		{"logs-no-run", []string{"logs", "--dir", devDir}, 2},
		{"run-submit-dev-dir", []string{"run", "submit", "--dir", devDir, "--pool", "no-such-pool", "--spec", spec}, 1},
		{"trace-help", []string{"trace", "-h"}, 0},
		{"trace-unknown-run", []string{"trace", "--dir", devDir, "run-0123456789abcdef"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := poolCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, raw := range []string{"StatusCode", "RequestID", "api error", "operation error"} {
				if strings.Contains(stderr, raw) {
					t.Errorf("the message shows the SDK's %q:\n%s", raw, stderr)
				}
			}
			got := strings.NewReplacer(devDir, "$DIR", empty, "$TMP", stopped, "$TMP", endpoint, "$S3").Replace(stderr)
			golden(t, "msg-"+tc.name, got)
		})
	}
}

// TestWorkersTable: STATE is the worker's state, SLOTS its busy/total slots
// (STATE no longer repeats SLOTS).
func TestWorkersTable(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	latest := map[string]*eventv1.Heartbeat{
		"gw-1": {WorkerId: "gw-1", State: eventv1.WorkerState_WORKER_STATE_IDLE, TimeUnixMs: now.Add(-3 * time.Second).UnixMilli(),
			Metadata: map[string]string{"zone": "a"},
			Executors: []*eventv1.ExecutorStatus{
				{ExecutorId: "exec-1", State: eventv1.WorkerState_WORKER_STATE_BUSY, Busy: 1, Slots: 2},
				{ExecutorId: "exec-2", State: eventv1.WorkerState_WORKER_STATE_IDLE, Busy: 0, Slots: 2, UnavailableReason: ""},
			}},
	}
	var b bytes.Buffer
	if err := printWorkers(&b, latest, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "workers", b.String())
}
