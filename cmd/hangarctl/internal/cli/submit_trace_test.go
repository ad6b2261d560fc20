package cli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSubmitWithoutOTLPHasATraceID: with no OTLP endpoint, run submit still
// prints a real trace id (not 32 zeros), which the envelope carries, so the
// pool's services record their spans under it.
func TestSubmitWithoutOTLPHasATraceID(t *testing.T) {
	t.Setenv("HANGAR_OTLP_ENDPOINT", "")
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "cp")
	mustPoolCLI(t, "ca", "init", "--dir", dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(lineWriter, 10)
	done := make(chan error, 1)
	go func() {
		done <- runBroker(ctx, env{args: []string{"--dir", dir, "--listen", "127.0.0.1:0"}, stdout: out, stderr: io.Discard})
	}()
	var addr string
	select {
	case line := <-out:
		addr, _ = strings.CutPrefix(strings.TrimSpace(line), "broker listening on mqtts://")
	case err := <-done:
		t.Fatalf("broker ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("broker did not say it listens")
	}
	key, csr := filepath.Join(tmp, "p.key"), filepath.Join(tmp, "p.csr")
	mustPoolCLI(t, "keygen", "--key", key, "--csr", csr, "--cn", "p1")
	mustPoolCLI(t, "pool", "create", "--dir", dir, "--name", "p1", "--csr", csr, "--broker", "mqtts://"+addr)
	spec := filepath.Join(tmp, "spec.json")
	if err := os.WriteFile(spec, demoSpec, 0o600); err != nil {
		t.Fatal(err)
	}
	stdout := mustPoolCLI(t, "run", "submit", "--dir", dir, "--pool", "p1", "--spec", spec)
	m := regexp.MustCompile(`run (\S+) submitted to pool p1 \(trace ([0-9a-f]{32})\)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("run submit printed %q", stdout)
	}
	if m[2] == strings.Repeat("0", 32) {
		t.Fatalf("run submit printed an all-zero trace id: %q", stdout)
	}
}
