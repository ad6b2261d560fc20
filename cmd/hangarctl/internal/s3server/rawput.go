package s3server

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/rclone/gofakes3"
)

// The body of a PutObject reaches the dir backend past gofakes3's readers
// (ADR 0025). gofakes3 wraps every PutObject body in a reader that hashes
// it with MD5 for the ETag, whether or not the client sent a Content-MD5:
// a fifth of the dev stack's CPU when logship uploads its live chunks,
// though the ETag made of it is not even used when a checksum is sent
// (writeObject). So withRawPuts puts the request's own body into the
// request's context, and the dir backend's PutObject reads that instead
// of the reader gofakes3 hands it (which is then never read), checking
// what gofakes3's readers would have checked: the Content-MD5 if the
// client sent one (BadDigest if the body differs), and the
// x-amz-checksum-<algorithm> header's checksum (BadDigest too).
// Everything else of the request (the signature, the metadata, the write
// conditions, the answer) is still gofakes3's.
//
// Only a PUT whose body is the object's bytes as they are is handed over:
// not aws-chunked (its chunk framing is gofakes3's to decode), with a
// Content-Length, and not a copy or an upload's part. gofakes3 calls the
// backend's PutObject for no other PUT.

// rawPutKey is the context key of a PutObject's raw body.
type rawPutKey struct{}

// rawPut is the body of a PutObject request, as the server received it.
type rawPut struct {
	body   io.Reader
	header http.Header
	size   int64
	taken  atomic.Bool
}

// withRawPuts hands the body of every plain PutObject request to the
// backend through the request's context (see above).
func withRawPuts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if plainPut(r) {
			raw := &rawPut{body: r.Body, header: r.Header, size: r.ContentLength}
			r = r.WithContext(context.WithValue(r.Context(), rawPutKey{}, raw))
		}
		next.ServeHTTP(w, r)
	})
}

// plainPut tells whether r is a PUT of an object whose body is the
// object's bytes, of a known length: no copy, no part of an upload, not
// aws-chunked.
func plainPut(r *http.Request) bool {
	if r.Method != http.MethodPut || r.ContentLength < 0 {
		return false
	}
	q := r.URL.Query()
	h := r.Header
	return !q.Has("uploadId") && !q.Has("partNumber") && h.Get("X-Amz-Copy-Source") == "" &&
		h.Get("X-Amz-Decoded-Content-Length") == "" &&
		!strings.HasPrefix(h.Get("X-Amz-Content-Sha256"), "STREAMING-") &&
		!strings.Contains(strings.ToLower(h.Get("Content-Encoding")), "aws-chunked")
}

// takeRawPut returns the raw body of the request of ctx if it has one of
// size bytes not taken yet, and marks it taken.
func takeRawPut(ctx context.Context, size int64) *rawPut {
	raw, _ := ctx.Value(rawPutKey{}).(*rawPut)
	if raw == nil || raw.size != size || !raw.taken.CompareAndSwap(false, true) {
		return nil
	}
	return raw
}

// checksumAlgorithms are the checksums S3 knows, by the name in their
// x-amz-checksum-<name> header: those gofakes3 checks.
var checksumAlgorithms = map[string]func() hash.Hash{
	"crc32":     func() hash.Hash { return crc32.NewIEEE() },
	"crc32c":    func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) },
	"crc64nvme": func() hash.Hash { return crc64.New(crc64.MakeTable(0x9a6c9329ac4bc9b5)) },
	"sha1":      sha1.New,
	"sha256":    sha256.New,
}

// check is a digest the body must have.
type check struct {
	hash     hash.Hash
	expected []byte
	name     string
}

// checkedBody reads a raw PutObject body, failing at its end with
// BadDigest if it does not match a Content-MD5 or checksum header.
type checkedBody struct {
	r      io.Reader
	checks []check
	md5    hash.Hash // the Content-MD5's check, if any
	sum    []byte
}

// reader returns the body, checked against the request's Content-MD5 and
// x-amz-checksum-<algorithm> headers if it has them (gofakes3 refused the
// request already if they were malformed; they are refused here too).
func (raw *rawPut) reader() (*checkedBody, error) {
	c := &checkedBody{r: io.LimitReader(raw.body, raw.size)}
	if v, ok := raw.header["Content-Md5"]; ok {
		want, err := base64.StdEncoding.DecodeString(strings.Join(v, ""))
		if err != nil || len(want) != md5.Size {
			return nil, gofakes3.ErrInvalidDigest
		}
		c.md5 = md5.New()
		c.checks = append(c.checks, check{hash: c.md5, expected: want, name: "Content-MD5"})
	}
	var algorithm string
	for k, v := range raw.header {
		name, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-checksum-")
		if !ok || name == "type" || name == "mode" || len(v) == 0 {
			continue
		}
		if algorithm != "" {
			return nil, gofakes3.ErrorMessage(gofakes3.ErrInvalidRequest, "Expecting a single x-amz-checksum- header.")
		}
		algorithm = name
		newHash, ok := checksumAlgorithms[name]
		if !ok {
			return nil, gofakes3.ErrorMessagef(gofakes3.ErrInvalidRequest, "The x-amz-checksum-%s header is not supported.", name)
		}
		want, err := base64.StdEncoding.DecodeString(v[0])
		h := newHash()
		if err != nil || len(want) != h.Size() {
			return nil, gofakes3.ErrorMessagef(gofakes3.ErrInvalidRequest, "Value for x-amz-checksum-%s header is invalid.", name)
		}
		c.checks = append(c.checks, check{hash: h, expected: want, name: strings.ToUpper(name)})
	}
	return c, nil
}

func (c *checkedBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for _, ck := range c.checks {
		ck.hash.Write(p[:n])
	}
	if err == io.EOF {
		for _, ck := range c.checks {
			if !bytes.Equal(ck.hash.Sum(nil), ck.expected) {
				return n, gofakes3.ErrorMessagef(gofakes3.ErrBadDigest, "The %s you specified did not match the calculated checksum.", ck.name)
			}
		}
		if c.md5 != nil {
			c.sum = c.md5.Sum(nil)
		}
	}
	return n, err
}

// Sum returns the body's MD5 once read whole if the client sent a
// Content-MD5 (it matched), else nil: writeObject then gives the object a
// random ETag.
func (c *checkedBody) Sum([]byte) []byte { return c.sum }
