// Package s3server runs an S3-compatible server on loopback for
// `hangarctl dev` and for tests.
//
// It is github.com/rclone/gofakes3 behind a plain HTTP listener, with AWS
// Signature Version 4 enforced (a request signed with another key pair is
// refused), path-style addressing, and the configured buckets created at
// start. Objects live in memory, or under a directory when Config.Dir is set
// so that they survive a restart of the dev stack: one file per object, and
// an object completed from a multipart upload kept as its parts' files (hard
// links: UploadPartCopy and Complete copy no byte; dirbackend.go,
// multipart.go); there, a PUT's body is read past gofakes3's MD5 (its
// ETag names the write, ADR 0025; rawput.go). It is not a production
// store: production uses AWS S3 or a real S3-compatible server.
package s3server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
)

// Config describes a server.
type Config struct {
	// Addr is the listen address, e.g. "127.0.0.1:0" for any free port.
	Addr string
	// AccessKey and SecretKey are the only credentials accepted. Both are
	// required.
	AccessKey, SecretKey string
	// Buckets are created at start if they do not exist yet.
	Buckets []string
	// Dir keeps the objects on disk under this directory; "" keeps them in
	// memory.
	Dir string
}

// Server is a running S3-compatible server.
type Server struct {
	ln   net.Listener
	http *http.Server
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
	stopWatch context.CancelFunc
}

// Start listens on cfg.Addr and serves until Close is called or ctx is
// done.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("s3server: access key and secret key are required")
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var backend gofakes3.Backend
	wrap := func(h http.Handler) http.Handler { return h }
	if cfg.Dir == "" {
		backend = s3mem.New()
	} else {
		b, err := newDirBackend(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("s3server: %w", err)
		}
		backend = b
		wrap = withRawPuts // its PutObject reads the raw body (rawput.go)
	}
	for _, name := range cfg.Buckets {
		err := backend.CreateBucket(ctx, name)
		if err != nil && !gofakes3.IsAlreadyExists(err) {
			return nil, fmt.Errorf("s3server: create bucket %s: %w", name, err)
		}
	}
	faker := gofakes3.New(backend,
		gofakes3.WithV4Auth(map[string]string{cfg.AccessKey: cfg.SecretKey}),
		gofakes3.WithHostBucket(false),
		gofakes3.WithoutVersioning(),
	)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("s3server: listen: %w", err)
	}
	s := &Server{
		ln:   ln,
		http: &http.Server{Handler: wrap(faker.Server()), ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln)
	}()
	wctx, cancel := context.WithCancel(ctx)
	s.stopWatch = cancel
	go func() {
		select {
		case <-wctx.Done():
			_ = s.Close()
		case <-s.done:
		}
	}()
	return s, nil
}

// Endpoint returns the server's base URL, "http://127.0.0.1:PORT", to give
// an S3 client as its endpoint with path-style addressing.
func (s *Server) Endpoint() string { return "http://" + s.ln.Addr().String() }

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, waiting up to five seconds for requests in
// flight. Objects in memory are lost; those under Config.Dir remain.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stopWatch()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			_ = s.http.Close()
			s.closeErr = fmt.Errorf("s3server: close: %w", err)
		}
		<-s.done
	})
	return s.closeErr
}
