// Package harness runs Hangar's real binaries for the end-to-end tests: it builds
// them once, starts them as processes on loopback with free ports, waits until
// they are ready, shows their output when a test fails, and stops them in
// t.Cleanup. It also has a control-plane MQTT client for assertions, an
// S3-compatible server for logship, and the Docker, registry and git fixtures
// of the execution tests (a busybox image imported locally, user-defined
// networks, Debian's docker-registry, git http-backend).
//
// The e2e module drives binaries only: it imports no services/* package and not
// hangarctl's internal packages.
package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Component is a binary of the repository: the directory of its Go module
// (relative to the repository root) and the package to build in it.
type Component struct {
	ModuleDir string
	Package   string
}

// Components are the binaries the harness knows how to build, by name.
var Components = map[string]Component{
	"hangarctl": {ModuleDir: "cmd/hangarctl", Package: "."},
	"gateway":   {ModuleDir: "services/gateway", Package: "./cmd/gateway"},
	"policy":    {ModuleDir: "services/policy", Package: "./cmd/policy"},
	"executor":  {ModuleDir: "services/executor", Package: "./cmd/executor"},
	"logship":   {ModuleDir: "services/logship", Package: "./cmd/logship"},
	// The executor's output relay, bind-mounted into run containers: built
	// static, beside the executor (where the executor looks for it).
	"hangar-relay": {ModuleDir: "services/executor", Package: "./cmd/hangar-relay"},
}

// FindRoot walks up from the working directory to the directory holding go.work.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work found above the working directory: run the tests from inside the repository")
		}
		dir = parent
	}
}

// Binaries builds the repository's binaries into one directory, each at most
// once, when first asked for.
type Binaries struct {
	root, dir string

	mu    sync.Mutex
	built map[string]*buildResult
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// NewBinaries returns a builder for the repository at root that puts binaries
// into dir. If HANGAR_E2E_BIN_DIR is set, a binary found there is used instead of
// being built (for CI jobs that built them already).
func NewBinaries(root, dir string) *Binaries {
	return &Binaries{root: root, dir: dir, built: map[string]*buildResult{}}
}

// Root is the repository root.
func (b *Binaries) Root() string { return b.root }

// Build builds the named binaries concurrently and returns the first error.
func (b *Binaries) Build(names ...string) error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = b.get(n)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Path returns the path of the named binary, building it first if needed; a
// build failure fails the test.
func (b *Binaries) Path(t testing.TB, name string) string {
	t.Helper()
	p, err := b.get(name)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

func (b *Binaries) get(name string) (string, error) {
	c, ok := Components[name]
	if !ok {
		return "", fmt.Errorf("harness: unknown binary %q", name)
	}
	b.mu.Lock()
	r := b.built[name]
	if r == nil {
		r = &buildResult{}
		b.built[name] = r
	}
	b.mu.Unlock()
	r.once.Do(func() {
		r.path, r.err = b.build(name, c)
		if r.err == nil && name == "executor" {
			r.err = b.relayBeside(r.path)
		}
	})
	return r.path, r.err
}

// relayBeside makes sure hangar-relay is in the executor's directory.
func (b *Binaries) relayBeside(executor string) error {
	dst := filepath.Join(filepath.Dir(executor), "hangar-relay")
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	c := Components["hangar-relay"]
	cmd := exec.Command("go", "build", "-o", dst, c.Package)
	cmd.Dir = filepath.Join(b.root, c.ModuleDir)
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build hangar-relay beside %s: %v\n%s", executor, err, msg)
	}
	return nil
}

func (b *Binaries) build(name string, c Component) (string, error) {
	if pre := os.Getenv("HANGAR_E2E_BIN_DIR"); pre != "" {
		p := filepath.Join(pre, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	out := filepath.Join(b.dir, name)
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", out, c.Package)
	cmd.Dir = filepath.Join(b.root, c.ModuleDir)
	// Each module must build alone, as a user's `go install` would.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if name == "hangar-relay" {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	}
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s (GOWORK=off go build -o %s %s in %s): %v\n%s", name, out, c.Package, cmd.Dir, err, msg)
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", name, time.Since(start).Round(time.Millisecond))
	return out, nil
}
