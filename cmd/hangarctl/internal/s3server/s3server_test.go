package s3server

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

const (
	testAccess = "hangar-test"
	testSecret = "hangar-test-secret-key"
	testBucket = "hangar-logs"
)

func client(endpoint, access, secret string) *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
	})
}

func start(t *testing.T, dir string) *Server {
	t.Helper()
	srv, err := Start(t.Context(), Config{Addr: "127.0.0.1:0", AccessKey: testAccess, SecretKey: testSecret,
		Buckets: []string{testBucket, "other"}, Dir: dir})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if !strings.HasPrefix(srv.Endpoint(), "http://127.0.0.1:") {
		t.Fatalf("Endpoint() = %q", srv.Endpoint())
	}
	return srv
}

func put(ctx context.Context, t *testing.T, c *s3.Client, key string, body []byte, meta map[string]string) {
	t.Helper()
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key),
		Body: bytes.NewReader(body), Metadata: meta})
	if err != nil {
		t.Fatalf("PutObject %s: %v", key, err)
	}
}

func get(ctx context.Context, t *testing.T, c *s3.Client, key string) ([]byte, map[string]string) {
	t.Helper()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GetObject %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b, out.Metadata
}

func list(ctx context.Context, t *testing.T, c *s3.Client, prefix string) []string {
	t.Helper()
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("ListObjectsV2: %v", err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

func TestPutGetList(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"memory", func(*testing.T) string { return "" }},
		{"dir", func(t *testing.T) string { return t.TempDir() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			srv := start(t, tc.dir(t))
			c := client(srv.Endpoint(), testAccess, testSecret)

			big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
			put(ctx, t, c, "runs/r1/chunks/00000001.log", []byte("hello "), nil)
			put(ctx, t, c, "runs/r1/chunks/00000002.log", []byte("world\n"), nil)
			put(ctx, t, c, "runs/r1/log", big, map[string]string{"hangar-bytes": "1048576"})
			put(ctx, t, c, "runs/r2/log", []byte("x"), nil)

			got, meta := get(ctx, t, c, "runs/r1/log")
			if !bytes.Equal(got, big) {
				t.Fatalf("body of runs/r1/log: %d bytes, want %d", len(got), len(big))
			}
			if meta["hangar-bytes"] != "1048576" {
				t.Errorf("metadata = %v", meta)
			}
			if got, _ := get(ctx, t, c, "runs/r1/chunks/00000002.log"); string(got) != "world\n" {
				t.Errorf("chunk 2 = %q", got)
			}
			want := []string{"runs/r1/chunks/00000001.log", "runs/r1/chunks/00000002.log", "runs/r1/log"}
			if keys := list(ctx, t, c, "runs/r1/"); !slices.Equal(keys, want) {
				t.Errorf("list runs/r1/ = %v, want %v", keys, want)
			}

			// Missing key: NoSuchKey.
			_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String("nope")})
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "NoSuchKey" {
				t.Errorf("GetObject of a missing key: %v, want NoSuchKey", err)
			}

			// Overwrite and delete.
			put(ctx, t, c, "runs/r2/log", []byte("yy"), nil)
			if got, _ := get(ctx, t, c, "runs/r2/log"); string(got) != "yy" {
				t.Errorf("after overwrite: %q", got)
			}
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r2/log")}); err != nil {
				t.Fatalf("DeleteObject: %v", err)
			}
			if keys := list(ctx, t, c, "runs/r2/"); len(keys) != 0 {
				t.Errorf("after delete: %v", keys)
			}
		})
	}
}

func TestWrongCredentialsRefused(t *testing.T) {
	srv := start(t, "")
	ctx := t.Context()
	for _, tc := range []struct{ name, access, secret string }{
		{"wrong secret", testAccess, "not-the-secret"},
		{"unknown access key", "someone-else", testSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := client(srv.Endpoint(), tc.access, tc.secret)
			_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("k"),
				Body: strings.NewReader("data")})
			if err == nil {
				t.Fatal("PutObject with wrong credentials succeeded")
			}
			_, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket)})
			if err == nil {
				t.Fatal("ListObjectsV2 with wrong credentials succeeded")
			}
		})
	}
	// Nothing was written.
	if keys := list(ctx, t, client(srv.Endpoint(), testAccess, testSecret), ""); len(keys) != 0 {
		t.Errorf("objects after refused writes: %v", keys)
	}
}

func TestDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	srv := start(t, dir)
	put(ctx, t, client(srv.Endpoint(), testAccess, testSecret), "runs/r1/log", []byte("kept"), nil)
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	srv = start(t, dir) // buckets exist already: not an error
	if got, _ := get(ctx, t, client(srv.Endpoint(), testAccess, testSecret), "runs/r1/log"); string(got) != "kept" {
		t.Errorf("after restart: %q", got)
	}
}

func TestStartValidates(t *testing.T) {
	if _, err := Start(t.Context(), Config{Addr: "127.0.0.1:0"}); err == nil {
		t.Error("Start without credentials succeeded")
	}
}

// TestPutIfNoneMatch: a PUT with If-None-Match: * stores an object only if
// the key has none (logship's final logs are never replaced), in memory
// and in a directory.
func TestPutIfNoneMatch(t *testing.T) {
	for _, tc := range []struct{ name, dir string }{{"memory", ""}, {"dir", t.TempDir()}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			c := client(start(t, tc.dir).Endpoint(), testAccess, testSecret)
			putIfNone := func(body string) error {
				_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
					Body: strings.NewReader(body), IfNoneMatch: aws.String("*")})
				return err
			}
			if err := putIfNone("first"); err != nil {
				t.Fatalf("first conditional put: %v", err)
			}
			err := putIfNone("second")
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "PreconditionFailed" {
				t.Fatalf("second conditional put: %v, want PreconditionFailed", err)
			}
			if got, _ := get(ctx, t, c, "runs/r/log"); string(got) != "first" {
				t.Errorf("object = %q, want the first one kept", got)
			}
		})
	}
}

// TestDirObjects: objects under a directory are streamed to their file
// (the header line rewritten in place once the body is known), read back
// whole and by ranges, keep their ETag from the PUT to HEAD, GET and
// If-Match, and files in the format of earlier versions (the header line
// unpadded) are still read.
func TestDirObjects(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	srv := start(t, dir)
	c := client(srv.Endpoint(), testAccess, testSecret)

	body := make([]byte, 3<<20+17)
	for i := range body {
		body[i] = byte(i * 7)
	}
	out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
		Body: bytes.NewReader(body), Metadata: map[string]string{"hangar-bytes": "3145745"}})
	if err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	etag := aws.ToString(out.ETag)
	if len(etag) != 34 {
		t.Fatalf("ETag %q: want 32 hex digits in quotes", etag)
	}
	got, meta := get(ctx, t, c, "runs/r/log")
	if !bytes.Equal(got, body) || meta["hangar-bytes"] != "3145745" {
		t.Fatalf("GET: %d bytes (want %d), metadata %v", len(got), len(body), meta)
	}
	for _, tc := range []struct {
		rng        string
		start, end int
	}{
		{"bytes=0-0", 0, 1},
		{"bytes=1000-1999", 1000, 2000},
		{"bytes=3145700-", 3145700, len(body)},
		{"bytes=-10", len(body) - 10, len(body)},
	} {
		r, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"), Range: aws.String(tc.rng)})
		if err != nil {
			t.Fatalf("GET %s: %v", tc.rng, err)
		}
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil || !bytes.Equal(b, body[tc.start:tc.end]) {
			t.Errorf("GET %s: %d bytes, err %v; want bytes %d-%d", tc.rng, len(b), err, tc.start, tc.end)
		}
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log")})
	if err != nil {
		t.Fatalf("HeadObject: %v", err)
	}
	if aws.ToString(head.ETag) != etag || aws.ToInt64(head.ContentLength) != int64(len(body)) {
		t.Errorf("HEAD: ETag %q, %d bytes; want %q, %d", aws.ToString(head.ETag), aws.ToInt64(head.ContentLength), etag, len(body))
	}
	// If-Match with the ETag of the PUT replaces the object; with another
	// one it fails.
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
		Body: strings.NewReader("second"), IfMatch: aws.String(`"00000000000000000000000000000000"`)}); err == nil {
		t.Error("PUT with If-Match of another ETag succeeded")
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
		Body: strings.NewReader("second"), IfMatch: aws.String(etag)}); err != nil {
		t.Errorf("PUT with If-Match of the stored ETag: %v", err)
	}
	if got, _ := get(ctx, t, c, "runs/r/log"); string(got) != "second" {
		t.Errorf("after the If-Match PUT: %q", got)
	}

	// An object file as earlier versions wrote it: the header line, unpadded.
	old := `{"key":"runs/old/log","metadata":{"Hangar-Bytes":"5"},"md5":"5d41402abc4b2a76b9719d911017c592","size":5,"modified":"2026-01-02T03:04:05Z"}` + "\n" + "hello"
	name := filepath.Join(dir, testBucket, base64.RawURLEncoding.EncodeToString([]byte("runs/old/log")))
	if err := os.WriteFile(name, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := get(ctx, t, c, "runs/old/log"); string(got) != "hello" {
		t.Errorf("an object of the earlier format: %q", got)
	}
	r, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/old/log"), Range: aws.String("bytes=1-3")})
	if err != nil {
		t.Fatalf("GET range of an object of the earlier format: %v", err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if string(b) != "ell" || aws.ToString(r.ETag) != `"5d41402abc4b2a76b9719d911017c592"` {
		t.Errorf("range of an object of the earlier format: %q, ETag %s", b, aws.ToString(r.ETag))
	}
	// No temporary file is left behind.
	entries, err := os.ReadDir(filepath.Join(dir, testBucket))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}
