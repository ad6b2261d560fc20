package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"

	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// This file holds what TestLogDurability needs beyond package harness: an
// S3-compatible server that can be stopped and started again on the same
// port with the same objects, a logship that can be killed and started again
// with the same ports and spool directory, and a /metrics reader.

// durS3 is an S3-compatible server (rclone/gofakes3, AWS Signature Version 4
// enforced, as harness.S3) on a fixed loopback address, which Stop and Start
// take down and bring back with the same in-memory objects. The test reads
// the objects straight from the backend, whether the server is up or not.
type durS3 struct {
	Addr                 string // 127.0.0.1:PORT
	Bucket, Region       string
	AccessKey, SecretKey string

	backend *s3mem.Backend
	handler http.Handler

	mu   sync.Mutex
	srv  *http.Server
	done chan struct{} // closed when srv's Serve returned
}

// startDurS3 starts the server on a free loopback port with one bucket; it
// stops in t.Cleanup.
func startDurS3(t testing.TB, bucket string) *durS3 {
	t.Helper()
	s := &durS3{Bucket: bucket, Region: "us-east-1", AccessKey: "e2e-dur-access", SecretKey: "e2e-dur-secret-key-0123456789", backend: s3mem.New()}
	if err := s.backend.CreateBucket(context.Background(), bucket); err != nil {
		t.Fatalf("s3: create bucket %s: %v", bucket, err)
	}
	s.handler = gofakes3.New(s.backend,
		gofakes3.WithV4Auth(map[string]string{s.AccessKey: s.SecretKey}),
		gofakes3.WithHostBucket(false),
		gofakes3.WithoutVersioning(),
	).Server()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.Stop)
	return s
}

func (s *durS3) serve(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv = &http.Server{Handler: s.handler, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 30 * time.Second}
	s.done = make(chan struct{})
	srv, done := s.srv, s.done
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// Running reports whether the server is up.
func (s *durS3) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Stop closes the listener and every connection at once (requests in flight
// fail), as an S3 endpoint that goes away. It does nothing if stopped.
func (s *durS3) Stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

// Start serves again on the same address, with the same objects. The port
// was ours a moment ago; if something else took it meanwhile (unlikely on
// loopback), it retries for a minute before failing the test.
func (s *durS3) Start(t testing.TB) {
	t.Helper()
	if s.Running() {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ln, err := net.Listen("tcp", s.Addr)
		if err == nil {
			s.serve(ln)
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("s3: listen again on %s: %v", s.Addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Endpoint is the server's URL (path-style).
func (s *durS3) Endpoint() string { return "http://" + s.Addr }

// Env is the S3 part of logship's environment.
func (s *durS3) Env() []string {
	return []string{
		"HANGAR_S3_ENDPOINT=" + s.Endpoint(), "HANGAR_S3_BUCKET=" + s.Bucket, "HANGAR_S3_REGION=" + s.Region,
		"HANGAR_S3_PATH_STYLE=true", "AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
	}
}

// ConfigJSON is the content of DIR/s3.json for `hangarctl logs`.
func (s *durS3) ConfigJSON() string {
	return `{"endpoint": "` + s.Endpoint() + `", "bucket": "` + s.Bucket + `", "region": "` + s.Region +
		`", "path_style": true, "access_key": "` + s.AccessKey + `", "secret_key": "` + s.SecretKey + `"}`
}

// Keys lists the keys under prefix, sorted.
func (s *durS3) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	p := gofakes3.NewPrefix(&prefix, nil)
	list, err := s.backend.ListBucket(context.Background(), s.Bucket, &p, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatalf("s3: list %s: %v", prefix, err)
	}
	var keys []string
	for _, c := range list.Contents {
		keys = append(keys, c.Key)
	}
	sort.Strings(keys)
	return keys
}

// Get returns an object's content and user metadata; ok is false if it does
// not exist.
func (s *durS3) Get(t testing.TB, key string) (body []byte, meta map[string]string, ok bool) {
	t.Helper()
	obj, err := s.backend.GetObject(context.Background(), s.Bucket, key, nil)
	if gofakes3.HasErrorCode(err, gofakes3.ErrNoSuchKey) {
		return nil, nil, false
	}
	if err != nil {
		t.Fatalf("s3: get %s: %v", key, err)
	}
	defer obj.Contents.Close()
	b, err := io.ReadAll(obj.Contents)
	if err != nil {
		t.Fatalf("s3: read %s: %v", key, err)
	}
	return b, obj.Metadata, true
}

// liveChunks is the concatenation of the run's live chunk objects in key
// order, and their keys.
func (s *durS3) liveChunks(t testing.TB, runID string) (string, []string) {
	t.Helper()
	keys := s.Keys(t, "runs/"+runID+"/chunks/")
	var b strings.Builder
	for _, k := range keys {
		body, _, ok := s.Get(t, k)
		if ok {
			b.Write(body)
		}
	}
	return b.String(), keys
}

// durLogship is how logship is started (and started again): its ports and
// spool directory stay the same across restarts.
type durLogship struct {
	bin                           string
	GRPCAddr, DebugAddr, SpoolDir string
	env                           []string
}

func newDurLogship(t testing.TB, bin string, s3 *durS3, extra ...string) *durLogship {
	l := &durLogship{bin: bin, GRPCAddr: harness.FreeAddr(t), DebugAddr: harness.FreeAddr(t), SpoolDir: t.TempDir()}
	l.env = append(append([]string{
		"HANGAR_LOGSHIP_GRPC_ADDR=" + l.GRPCAddr,
		"HANGAR_LOGSHIP_DEBUG_ADDR=" + l.DebugAddr,
		"HANGAR_LOGSHIP_SPOOL_DIR=" + l.SpoolDir,
	}, s3.Env()...), extra...)
	return l
}

// Start runs logship (stopped with SIGTERM in t.Cleanup) and waits for its
// /readyz. A port taken meanwhile by another process fails the test with
// logship's own message.
func (l *durLogship) Start(t testing.TB, name string) *harness.Process {
	t.Helper()
	p := harness.Start(t, name, l.env, l.bin)
	p.WaitHTTP200("http://"+l.DebugAddr+"/readyz", 2*time.Minute)
	return p
}

// durMetrics reads a /metrics page and returns, for each metric name, the sum
// of its series (all label values).
func durMetrics(t testing.TB, debugAddr string) map[string]float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + debugAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics of %s: %v", debugAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics of %s: %s", debugAddr, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
			// Label values may hold spaces: the value is the field after "}".
			if j := strings.LastIndexByte(line, '}'); j >= 0 {
				f = strings.Fields(line[j+1:])
				if len(f) == 0 {
					continue
				}
				f = append([]string{name}, f...)
			}
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics of %s: %v", debugAddr, err)
	}
	return out
}

// durEventually polls cond every 50ms until it holds, for up to timeout; then
// the test fails with what and cond's last detail. Only the absence of the
// condition after a generous bound fails a test, never a duration.
func durEventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s: %s", what, timeout, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// durFilesContaining lists the files under dir whose content contains one of
// needles (as "path: what").
func durFilesContaining(t testing.TB, dir string, needles map[string]string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for what, n := range needles {
			if strings.Contains(string(b), n) {
				hits = append(hits, p+": "+what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	sort.Strings(hits)
	return hits
}
