package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// binary builds cmd/logship once per test process.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "logship-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "logship")
		cmd := exec.Command("go", "build", "-o", binPath, "../../cmd/logship")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func baseEnv(t *testing.T) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"HANGAR_LOGSHIP_GRPC_ADDR=127.0.0.1:0", "HANGAR_LOGSHIP_DEBUG_ADDR=127.0.0.1:0",
		"HANGAR_LOGSHIP_SPOOL_DIR=" + t.TempDir(),
	}
}

func TestBadEnvironmentStopsWithTheVariableName(t *testing.T) {
	bin := binary(t)
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"bucket missing", nil, "HANGAR_S3_BUCKET"},
		{"bad chunk interval", []string{"HANGAR_S3_BUCKET=logs", "HANGAR_LOGSHIP_CHUNK_INTERVAL=soon"}, "HANGAR_LOGSHIP_CHUNK_INTERVAL"},
		{"bad path style", []string{"HANGAR_S3_BUCKET=logs", "HANGAR_S3_PATH_STYLE=maybe"}, "HANGAR_S3_PATH_STYLE"},
		{"bad min length", []string{"HANGAR_S3_BUCKET=logs", "HANGAR_MASK_MIN_LENGTH=-1"}, "HANGAR_MASK_MIN_LENGTH"},
		{"log limit zero", []string{"HANGAR_S3_BUCKET=logs", "HANGAR_LOG_MAX_BYTES=0"}, "HANGAR_LOG_MAX_BYTES"},
		{"bad standard output flag", []string{"HANGAR_S3_BUCKET=logs", "HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT=on"}, "HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(baseEnv(t), tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("logship exited with %v, want status 2; stderr:\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not name %s:\n%s", tc.want, stderr.String())
			}
		})
	}
}

// TestBinaryShipsToS3 runs the real binary against the in-process S3 with
// credentials from the standard AWS variables, ships a run and stops it
// with SIGTERM; with HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT, the masked lines
// are on its standard output.
func TestBinaryShipsToS3(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stdout bool
	}{{"standard output off", false}, {"standard output on", true}} {
		t.Run(tc.name, func(t *testing.T) { binaryShipsToS3(t, tc.stdout) })
	}
}

func binaryShipsToS3(t *testing.T, stdoutOn bool) {
	bin := binary(t)
	s3 := s3test.Start(t)
	cmd := exec.Command(bin)
	cmd.Env = append(baseEnv(t), "HANGAR_S3_BUCKET="+s3test.Bucket, "HANGAR_S3_ENDPOINT="+s3.Endpoint(),
		"HANGAR_S3_PATH_STYLE=true", "AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey,
		"HANGAR_LOGSHIP_CHUNK_INTERVAL=100ms", "HANGAR_LOG_LEVEL=debug", "HANGAR_LOG_MAX_BYTES=65536",
		"HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT="+strconv.FormatBool(stdoutOn))
	var stdout syncBuf
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var logs syncBuf
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.add(sc.Text() + "\n")
			var line struct {
				Msg  string `json:"msg"`
				GRPC string `json:"grpc"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "logship listening" {
				addr <- line.GRPC
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var grpcAddr string
	select {
	case grpcAddr = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatalf("logship did not start:\n%s", logs.String())
	}

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := logsv1.NewLogServiceClient(conn).Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secret := "binary-secret-42"
	send := func(r *logsv1.ShipRequest) {
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: "run-bin", StackId: "stack-bin",
		Secrets: []*logsv1.Secret{{Name: "SECRET", Value: []byte(secret)}, {Name: "SHORTONE", Value: []byte("ab")}}}}})
	send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{Sequence: 1, Data: []byte("hello binary-sec")}}})
	send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{Sequence: 2, Data: []byte("ret-42 world\n")}}})
	send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{LastSequence: 2}}})
	var closed *logsv1.Closed
	for closed == nil {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("ship: %v\n%s", err, logs.String())
		}
		closed = resp.GetClosed()
	}
	want := "[hangar] not masked in this log (shorter than 6 bytes): SHORTONE\nhello ****** world\n"
	if closed.GetLogKey() != "runs/run-bin/log" || closed.GetBytes() != uint64(len(want)) {
		t.Fatalf("Closed = %v", closed)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, _, ok := s3.Get(t, closed.GetLogKey())
		if ok {
			if string(body) != want {
				t.Fatalf("final log %q, want %q", body, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("final object missing\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("logship exited with %v after SIGTERM\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("logship did not stop on SIGTERM")
	}
	out := logs.String()
	if strings.Contains(out, secret) {
		t.Error("logship's logs contain a secret value")
	}
	if !strings.Contains(out, "SHORTONE") {
		t.Errorf("the short secret's name is not logged:\n%s", out)
	}
	lines := stdout.String()
	if strings.Contains(lines, secret) {
		t.Error("logship's standard output contains a secret value")
	}
	if !stdoutOn {
		if lines != "" {
			t.Errorf("standard output without HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT: %q", lines)
		}
		return
	}
	wantLines := []string{"[hangar] not masked in this log (shorter than 6 bytes): SHORTONE", "hello ****** world"}
	if strings.Count(lines, "\n") != len(wantLines) {
		t.Fatalf("standard output %q: want %d JSON lines", lines, len(wantLines))
	}
	for i, l := range strings.SplitAfter(strings.TrimSuffix(lines, "\n"), "\n") {
		var line map[string]string
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("standard output line %q: %v", l, err)
		}
		if line["run_id"] != "run-bin" || line["stack_id"] != "stack-bin" || line["message"] != wantLines[i] {
			t.Errorf("standard output line %v, want message %q", line, wantLines[i])
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) add(x string) { s.mu.Lock(); s.b.WriteString(x); s.mu.Unlock() }
func (s *syncBuf) Write(p []byte) (int, error) {
	s.add(string(p))
	return len(p), nil
}
func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
