package dockerrt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
	"github.com/hangar-dev/hangar/platform/runimage"
	"github.com/hangar-dev/hangar/services/executor/internal/runner"
	"github.com/hangar-dev/hangar/services/executor/internal/supervise"
)

const testImage = "hangar-test/busybox:latest"

// TestMain checks the engine and builds the test image once. A missing
// engine or busybox fails the tests with what to install: they are never
// skipped silently.
func TestMain(m *testing.M) {
	if err := prepareEngine(); err != nil {
		fmt.Fprintf(os.Stderr, "dockerrt tests need a running Docker engine and Debian's busybox-static "+
			"(apt-get install -y docker.io busybox-static; start dockerd): %v\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "hio")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayPath = filepath.Join(dir, "hangar-relay")
	build := exec.Command("go", "build", "-o", relayPath, "github.com/hangar-dev/hangar/services/executor/cmd/hangar-relay")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hangar-relay: %v\n%s", err, out)
		os.Exit(1)
	}
	ioDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// relayPath is the relay binary built for the tests; ioDir holds the runs'
// relay sockets.
var relayPath, ioDir string

func prepareEngine() error {
	cli, err := NewClientFromEnv()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	fs, err := runimage.Busybox(nil)
	if err != nil {
		return err
	}
	_, err = runimage.Ensure(ctx, ImageEngine{API: cli}, testImage, fs)
	return err
}

// engine returns a client of the test engine.
func engine(t *testing.T) *client.Client {
	t.Helper()
	cli, err := NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// uniqueID returns an id unique to this test run, usable as a run id, an
// executor id or a Docker object name.
func uniqueID(prefix string) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

// newRuntime returns a runtime with its own executor id, and checks at the
// end of the test that nothing labelled with that id is left on the engine.
// Its phases' stderr is a pipe of its own (SeparateStderr), so that the
// tests can tell a command's output from the "+ command" traces;
// TestRunPhasesInOrder covers the default, one pipe for both.
func newRuntime(t *testing.T, cli *client.Client, opts Options) *Runtime {
	t.Helper()
	opts.SeparateStderr = true
	return newRuntimeMode(t, cli, opts)
}

// newRuntimeMode is newRuntime with opts.SeparateStderr as given.
func newRuntimeMode(t *testing.T, cli *client.Client, opts Options) *Runtime {
	t.Helper()
	if opts.ExecutorID == "" {
		opts.ExecutorID = uniqueID("exec")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	if opts.RelayPath == "" {
		opts.RelayPath, opts.IODir = relayPath, ioDir
	}
	rt, err := New(cli, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rt.Close()
		assertNothingLeft(t, cli, opts.ExecutorID)
	})
	return rt
}

// assertNothingLeft fails if a container or volume labelled with the
// executor id exists, then removes it.
func assertNothingLeft(t *testing.T, cli *client.Client, executorID string) {
	t.Helper()
	ctx := context.Background()
	f := client.Filters{}
	f.Add("label", LabelManaged+"=true", LabelExecutorID+"="+executorID)
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Errorf("list containers: %v", err)
	}
	for _, c := range cs.Items {
		t.Errorf("container %s (%v, labels %v) left behind", c.ID, c.Names, c.Labels)
		_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	}
	vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		t.Errorf("list volumes: %v", err)
	}
	for _, v := range vs.Items {
		t.Errorf("volume %s (labels %v) left behind", v.Name, v.Labels)
		_, _ = cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true})
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers that can signal
// when a marker appears in what was written.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
}

func newSyncBuffer(marker string) *syncBuffer {
	return &syncBuffer{marker: marker, seen: make(chan struct{})}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.marker != "" && strings.Contains(b.buf.String(), b.marker) {
		select {
		case <-b.seen:
		default:
			close(b.seen)
		}
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testJob is a job of the test image with the given phases, recording its
// output and the phases it started.
type testJob struct {
	*runner.Job
	stdout, stderr *syncBuffer
	mu             sync.Mutex
	phases         []string
}

func newJob(phases ...*runv1.Phase) *testJob {
	tj := &testJob{stdout: newSyncBuffer(""), stderr: newSyncBuffer("")}
	tj.Job = &runner.Job{
		RunID: uniqueID("run"),
		Spec: &runv1.RunSpec{
			Type:        runv1.RunType_RUN_TYPE_TRACKED,
			RunnerImage: testImage,
			Phases:      phases,
		},
		Stdout:    tj.stdout,
		Stderr:    tj.stderr,
		StopGrace: 2 * time.Second,
		OnPhase: func(p string) {
			tj.mu.Lock()
			defer tj.mu.Unlock()
			tj.phases = append(tj.phases, p)
		},
	}
	return tj
}

func (tj *testJob) startedPhases() []string {
	tj.mu.Lock()
	defer tj.mu.Unlock()
	return append([]string(nil), tj.phases...)
}

func phase(name string, commands ...string) *runv1.Phase {
	return &runv1.Phase{Name: name, Commands: commands}
}

// runJob runs the job with a generous bound, so that a hang fails the test
// instead of blocking it.
func runJob(t *testing.T, rt *Runtime, tj *testJob) runner.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return supervise.Run(ctx, rt, tj.Job, supervise.Limits{})
}

func wantFinished(t *testing.T, res runner.Result, tj *testJob) {
	t.Helper()
	if res.Outcome != eventv1.Outcome_OUTCOME_FINISHED || res.ExitCode != 0 {
		t.Fatalf("result = %+v, want FINISHED with exit code 0\nstdout:\n%s\nstderr:\n%s", res, tj.stdout, tj.stderr)
	}
}
