package cli

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestDevGC: the dev stack collects at GOGC=devGCPercent, unless the
// environment says otherwise.
func TestDevGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "50") // restored after the test
	devGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set, devGC set GOGC to %d", got)
	}

	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	devGC()
	if got := debug.SetGCPercent(100); got != devGCPercent {
		t.Fatalf("without GOGC, GOGC is %d, want %d", got, devGCPercent)
	}
}
