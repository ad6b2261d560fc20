package app_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
)

// TestSpoolDiskGuard runs the real binary with a minimum free space no
// disk has (HANGAR_SPOOL_MIN_FREE_MB at its maximum, 1 PiB; measured by
// statfs on the real spool directory): /readyz fails naming the spool and
// the metric says so, and a new run's Open is refused with UNAVAILABLE
// (the executor retries).
func TestSpoolDiskGuard(t *testing.T) {
	bin := binary(t)
	s3 := s3test.Start(t)
	cmd := exec.Command(bin)
	cmd.Env = append(baseEnv(t), "HANGAR_S3_BUCKET="+s3test.Bucket, "HANGAR_S3_ENDPOINT="+s3.Endpoint(),
		"HANGAR_S3_PATH_STYLE=true", "AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey,
		"HANGAR_SPOOL_MIN_FREE_MB=1073741824")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var logs syncBuf
	type addrs struct{ grpc, debug string }
	ready := make(chan addrs, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.add(sc.Text() + "\n")
			var line struct {
				Msg   string `json:"msg"`
				GRPC  string `json:"grpc"`
				Debug string `json:"debug"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "logship listening" {
				ready <- addrs{line.GRPC, line.Debug}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var a addrs
	select {
	case a = <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("logship did not start:\n%s", logs.String())
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + a.debug + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "spool disk nearly full") {
		t.Errorf("/readyz = %d %q, want 503 naming the spool's disk", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "hangar_logship_spool_full 1") {
		t.Errorf("/metrics lacks hangar_logship_spool_full 1")
	}

	conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := logsv1.NewLogServiceClient(conn).Ship(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: "run-full"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "spool disk nearly full") {
		t.Errorf("Open while the spool's disk is full: %v, want UNAVAILABLE naming the spool", err)
	}
	if !strings.Contains(logs.String(), "taking no new run") {
		t.Errorf("logship's log does not say it takes no new run:\n%s", logs.String())
	}
}
