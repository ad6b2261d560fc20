package harness

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"sort"
	"testing"

	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
)

// S3 is an S3-compatible server (rclone/gofakes3 with AWS Signature Version 4
// enforced) on a loopback port, for logship. The test reads the stored objects
// straight from its in-memory backend.
type S3 struct {
	Endpoint             string // http://127.0.0.1:PORT, path-style
	Bucket               string
	Region               string
	AccessKey, SecretKey string

	backend *s3mem.Backend
}

// StartS3 starts the server with one bucket; it stops in t.Cleanup.
func StartS3(t testing.TB, bucket string) *S3 {
	t.Helper()
	s := &S3{Bucket: bucket, Region: "us-east-1", AccessKey: "e2e-access", SecretKey: "e2e-secret-key-0123456789", backend: s3mem.New()}
	if err := s.backend.CreateBucket(context.Background(), bucket); err != nil {
		t.Fatalf("s3: create bucket %s: %v", bucket, err)
	}
	faker := gofakes3.New(s.backend,
		gofakes3.WithV4Auth(map[string]string{s.AccessKey: s.SecretKey}),
		gofakes3.WithHostBucket(false),
		gofakes3.WithoutVersioning(),
	)
	srv := httptest.NewUnstartedServer(faker.Server())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)
	s.Endpoint = srv.URL
	return s
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
