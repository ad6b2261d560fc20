package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// TestStartErrorsNameTheVariable is issue 11's "every configuration value is
// checked at start, including addresses and directories, and an error names
// the variable": each service, started with one bad address or directory,
// exits at once, non-zero, naming the variable (and not retrying for ever).
func TestStartErrorsNameTheVariable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "does-not-exist")
	file := harness.WriteFile(t, t.TempDir(), "a-file", "x")
	cases := []struct {
		service, name string
		env           []string
		varName       string
	}{
		{"executor", "gateway address not an address", []string{"HANGAR_GATEWAY_ADDR=gateway", "HANGAR_EXECUTOR_WORK_DIR=" + t.TempDir()}, "HANGAR_GATEWAY_ADDR"},
		{"executor", "gateway address a URL", []string{"HANGAR_GATEWAY_ADDR=http://127.0.0.1:7300", "HANGAR_EXECUTOR_WORK_DIR=" + t.TempDir()}, "HANGAR_GATEWAY_ADDR"},
		{"executor", "work directory missing", []string{"HANGAR_GATEWAY_ADDR=127.0.0.1:1", "HANGAR_EXECUTOR_WORK_DIR=" + missing}, "HANGAR_EXECUTOR_WORK_DIR"},
		{"executor", "logship address without port", []string{"HANGAR_LOGSHIP_ADDR=127.0.0.1", "HANGAR_EXECUTOR_WORK_DIR=" + t.TempDir()}, "HANGAR_LOGSHIP_ADDR"},
		{"executor", "debug address port out of range", []string{"HANGAR_EXECUTOR_DEBUG_ADDR=:99999", "HANGAR_EXECUTOR_WORK_DIR=" + t.TempDir()}, "HANGAR_EXECUTOR_DEBUG_ADDR"},
		{"gateway", "gRPC address not an address", []string{"HANGAR_GATEWAY_GRPC_ADDR=nonsense", "HANGAR_GATEWAY_DATA_DIR=" + t.TempDir()}, "HANGAR_GATEWAY_GRPC_ADDR"},
		{"gateway", "data directory a file", []string{"HANGAR_GATEWAY_DATA_DIR=" + file}, "HANGAR_GATEWAY_DATA_DIR"},
		{"gateway", "policy address a URL", []string{"HANGAR_POLICY_ADDR=http://policy:7301", "HANGAR_GATEWAY_DATA_DIR=" + t.TempDir()}, "HANGAR_POLICY_ADDR"},
		{"logship", "spool directory a file", []string{"HANGAR_S3_BUCKET=b", "HANGAR_LOGSHIP_SPOOL_DIR=" + file}, "HANGAR_LOGSHIP_SPOOL_DIR"},
		{"logship", "gRPC address not an address", []string{"HANGAR_S3_BUCKET=b", "HANGAR_LOGSHIP_GRPC_ADDR=logship", "HANGAR_LOGSHIP_SPOOL_DIR=" + t.TempDir()}, "HANGAR_LOGSHIP_GRPC_ADDR"},
		{"policy", "debug address not an address", []string{"HANGAR_POLICY_DEBUG_ADDR=9301"}, "HANGAR_POLICY_DEBUG_ADDR"},
		{"policy", "policy file missing", []string{"HANGAR_RUN_INITIALIZATION_POLICY=" + missing}, "HANGAR_RUN_INITIALIZATION_POLICY"},
		{"policy", "OTLP endpoint a URL", []string{"HANGAR_OTLP_ENDPOINT=http://collector:4317"}, "HANGAR_OTLP_ENDPOINT"},
	}
	for _, c := range cases {
		t.Run(c.service+"/"+c.name, func(t *testing.T) {
			bin := bins.Path(t, c.service)
			r := harness.Run(t, time.Minute, c.env, bin)
			if r.Code == 0 {
				t.Fatalf("%s with %s exited 0:\n%s", c.service, c.name, r)
			}
			if !strings.Contains(r.Stdout+r.Stderr, c.varName) {
				t.Errorf("%s with %s: the error does not name %s:\n%s", c.service, c.name, c.varName, r)
			}
		})
	}
}
