package harness

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
)

// S3 is an S3-compatible server (rclone/gofakes3 with AWS Signature Version 4
// enforced) on a loopback port, for logship. The test reads the stored objects
// straight from its in-memory backend, whether the server is up or not; Stop
// and Start take it down and bring it back on the same address with the same
// objects (an S3 outage).
type S3 struct {
	Endpoint             string // http://127.0.0.1:PORT, path-style
	Addr                 string // 127.0.0.1:PORT
	Bucket               string
	Region               string
	AccessKey, SecretKey string

	backend *s3mem.Backend
	handler http.Handler

	mu   sync.Mutex
	srv  *http.Server
	done chan struct{} // closed when srv's Serve returned
}

// StartS3 starts the server with one bucket; it stops in t.Cleanup.
func StartS3(t testing.TB, bucket string) *S3 {
	t.Helper()
	s := &S3{Bucket: bucket, Region: "us-east-1", AccessKey: "e2e-access", SecretKey: "e2e-secret-key-0123456789", backend: s3mem.New()}
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
	s.Endpoint = "http://" + s.Addr
	s.serve(ln)
	t.Cleanup(s.Stop)
	return s
}

func (s *S3) serve(ln net.Listener) {
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
func (s *S3) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Stop closes the listener and every connection at once (requests in flight
// fail), as an S3 endpoint that goes away. It does nothing if stopped.
func (s *S3) Stop() {
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
func (s *S3) Start(t testing.TB) {
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

// Env is the S3 part of logship's environment.
func (s *S3) Env() []string {
	return []string{
		"HANGAR_S3_ENDPOINT=" + s.Endpoint, "HANGAR_S3_BUCKET=" + s.Bucket, "HANGAR_S3_REGION=" + s.Region,
		"HANGAR_S3_PATH_STYLE=true", "AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
	}
}

// ConfigJSON is the content of DIR/s3.json for `hangarctl logs`.
func (s *S3) ConfigJSON() string {
	return `{"endpoint": "` + s.Endpoint + `", "bucket": "` + s.Bucket + `", "region": "` + s.Region +
		`", "path_style": true, "access_key": "` + s.AccessKey + `", "secret_key": "` + s.SecretKey + `"}`
}

// Keys lists the keys under prefix, sorted.
func (s *S3) Keys(t testing.TB, prefix string) []string {
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
func (s *S3) Get(t testing.TB, key string) (body []byte, meta map[string]string, ok bool) {
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
