// Package s3test runs an in-process S3-compatible server (rclone/gofakes3,
// SigV4 enforced) on a real loopback socket for logship's tests, and can
// stop and restart it on the same port with its objects kept, to simulate
// an S3 outage. It counts the requests it serves by kind, with the body
// bytes each kind carried, and can refuse UploadPartCopy with
// NotImplemented as some S3-compatible servers do.
package s3test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
)

// Credentials and bucket of every Server.
const (
	AccessKey = "logship-test"
	SecretKey = "logship-test-secret"
	Bucket    = "hangar-logs"
)

// Server is a running fake S3.
type Server struct {
	t       testing.TB
	handler http.Handler
	addr    string
	rec     *recorder

	mu  sync.Mutex
	srv *http.Server

	reqMu     sync.Mutex
	requests  map[string]int
	bodyBytes map[string]int64
	noCopy    bool
	otherETag bool
	failing   map[string]bool
}

// copyETag matches the ETag of an UploadPartCopy's answer.
var copyETag = regexp.MustCompile(`(<ETag>(?:&#34;|&quot;|")?)[0-9a-f]{32}`)

// etagRewriter holds an answer back to replace the ETag in it.
type etagRewriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *etagRewriter) Write(p []byte) (int, error) { return w.buf.Write(p) }

// Request kinds counted by Requests and BodyBytes.
const (
	KindPut            = "PutObject"
	KindCreateUpload   = "CreateMultipartUpload"
	KindUploadPart     = "UploadPart"
	KindUploadPartCopy = "UploadPartCopy"
	KindComplete       = "CompleteMultipartUpload"
	KindAbort          = "AbortMultipartUpload"
	KindOther          = "other"
)

// kind names an S3 request.
func kind(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPut && q.Has("uploadId") && r.Header.Get("X-Amz-Copy-Source") != "":
		return KindUploadPartCopy
	case r.Method == http.MethodPut && q.Has("uploadId"):
		return KindUploadPart
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") == "":
		return KindPut
	case r.Method == http.MethodPost && q.Has("uploads"):
		return KindCreateUpload
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return KindComplete
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		return KindAbort
	}
	return KindOther
}

// ServeHTTP counts the request and serves it (or refuses an
// UploadPartCopy, see RefuseUploadPartCopy).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := kind(r)
	s.reqMu.Lock()
	s.requests[k]++
	noCopy, fail, otherETag := s.noCopy, s.failing[k], s.otherETag
	s.reqMu.Unlock()
	if fail {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>failing on purpose</Message></Error>`)
		return
	}
	if k == KindUploadPartCopy && noCopy {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotImplemented)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>UploadPartCopy is not implemented</Message></Error>`)
		return
	}
	r.Body = &countingBody{ReadCloser: r.Body, s: s, kind: k}
	if k == KindUploadPartCopy && otherETag {
		rw := &etagRewriter{ResponseWriter: w}
		s.handler.ServeHTTP(rw, r)
		_, _ = w.Write(copyETag.ReplaceAll(rw.buf.Bytes(), []byte("${1}00000000000000000000000000000000")))
		return
	}
	s.handler.ServeHTTP(w, r)
}

// AnswerOtherCopyETags makes the server answer every UploadPartCopy with
// an ETag that is not the copied object's (as a server whose ETags are
// not MD5s of the bodies may).
func (s *Server) AnswerOtherCopyETags() {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	s.otherETag = true
}

type countingBody struct {
	io.ReadCloser
	s    *Server
	kind string
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.s.reqMu.Lock()
	b.s.bodyBytes[b.kind] += int64(n)
	b.s.reqMu.Unlock()
	return n, err
}

// Requests returns how many requests of kind were served.
func (s *Server) Requests(kind string) int {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	return s.requests[kind]
}

// BodyBytes returns how many body bytes the requests of kind carried (as
// sent, signing chunks included).
func (s *Server) BodyBytes(kind string) int64 {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	return s.bodyBytes[kind]
}

// ResetCounts sets the request and byte counts back to zero.
func (s *Server) ResetCounts() {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	s.requests, s.bodyBytes = map[string]int{}, map[string]int64{}
}

// FailRequests makes the server answer every request of kind with 500
// InternalError (on), or serve them again (off).
func (s *Server) FailRequests(kind string, on bool) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	s.failing[kind] = on
}

// RefuseUploadPartCopy makes the server answer every UploadPartCopy with
// 501 NotImplemented.
func (s *Server) RefuseUploadPartCopy() {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	s.noCopy = true
}

// recorder is the backend with a record of every object ever put, so that
// tests can look at objects deleted since (logship's live chunks).
type recorder struct {
	gofakes3.Backend
	mu   sync.Mutex
	puts map[string][]byte
}

func (r *recorder) PutObject(ctx context.Context, bucket, key string, meta map[string]string, input io.Reader, size int64) (gofakes3.PutObjectResult, error) {
	body, err := gofakes3.ReadAll(input, size)
	if err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	res, err := r.Backend.PutObject(ctx, bucket, key, meta, bytes.NewReader(body), size)
	if err == nil {
		r.mu.Lock()
		r.puts[key] = body
		r.mu.Unlock()
	}
	return res, err
}

// Start starts a server; it stops at the end of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(context.Background(), Bucket); err != nil {
		t.Fatalf("s3test: create bucket: %v", err)
	}
	rec := &recorder{Backend: backend, puts: map[string][]byte{}}
	faker := gofakes3.New(rec, gofakes3.WithV4Auth(map[string]string{AccessKey: SecretKey}), gofakes3.WithoutVersioning())
	s := &Server{t: t, handler: faker.Server(), addr: "127.0.0.1:0", rec: rec,
		requests: map[string]int{}, bodyBytes: map[string]int64{}, failing: map[string]bool{}}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Endpoint is the server's URL.
func (s *Server) Endpoint() string { return "http://" + s.addr }

// Stop closes the listener and every connection: S3 is unreachable.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// Restart listens again on the same address, with the same objects.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after Stop
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("s3test: listen: %v", err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func(srv *http.Server) { _ = srv.Serve(ln) }(s.srv)
}

// Client returns an S3 client of the server (path-style, no SDK retries).
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(s.Endpoint()), UsePathStyle: true,
		Credentials:      credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		RetryMaxAttempts: 1,
	})
}

// Get returns an object's body and metadata, or ok=false if it does not
// exist.
func (s *Server) Get(t testing.TB, key string) (body []byte, meta map[string]string, ok bool) {
	t.Helper()
	out, err := s.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, nil, false
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("s3test: read %s: %v", key, err)
	}
	return b, out.Metadata, true
}

// Put returns the body last put under key, even if the object was deleted
// since, or ok=false if nothing was ever put there.
func (s *Server) Put(key string) (body []byte, ok bool) {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	body, ok = s.rec.puts[key]
	return body, ok
}

// PutKeys returns, in order, the keys under prefix ever put, deleted
// since or not.
func (s *Server) PutKeys(prefix string) []string {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	var keys []string
	for k := range s.rec.puts {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// List returns the keys under prefix, in order.
func (s *Server) List(t testing.TB, prefix string) []string {
	t.Helper()
	out, err := s.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(Bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("s3test: list %s: %v", prefix, err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}
