// Package s3log stores run logs in S3 and reads them back.
//
// Key layout, under a configurable prefix (default "runs/"):
//
//	<prefix><run_id>/chunks/00000001.log  live chunks: each holds the masked
//	                                      bytes that followed the previous one,
//	                                      so their concatenation in key order
//	                                      is a prefix of the log
//	<prefix><run_id>/log                  the final masked log, written once
//	                                      the run's log is closed, with user
//	                                      metadata hangar-bytes (decimal),
//	                                      hangar-sha256 (hex),
//	                                      hangar-last-sequence and
//	                                      hangar-bytes-truncated (masked
//	                                      bytes cut from the middle of a log
//	                                      longer than its limit; decimal)
//	                                      and hangar-incomplete ("true" when
//	                                      logship closed the log because the
//	                                      executor did not come back)
//
// The final object is the authoritative log; the live chunks let a reader
// follow a run that is still going on. The final object is written with
// If-None-Match: * (never replaced: ErrFinalExists); once it is stored,
// logship removes the live chunks, so a finished log lives in one place.
//
// The final object is either one PutObject of the whole log (PutFinal) or
// a multipart upload (PutFinalParts, ADR 0022) whose parts are, where
// they can be, server-side copies (UploadPartCopy) of the live chunks
// already uploaded, each checked against the chunk's ETag, and otherwise
// bytes sent again; the condition is then on CompleteMultipartUpload. A
// server that cannot do that gets ErrMultipartUnsupported (counted in
// hangar_logship_final_multipart_fallbacks_total) and the log is put
// whole. Every failed multipart upload is aborted; one left behind by a
// crash is aborted by the next logship before it assembles that run's
// final object (AbortUploads), if it may list the bucket's multipart
// uploads; else it costs its parts' storage on AWS until a lifecycle rule
// (AbortIncompleteMultipartUpload) removes it.
package s3log

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithymw "github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrNotFound is returned when an object does not exist.
var ErrNotFound = errors.New("s3log: no such object")

// ErrFinalExists is returned by PutFinal when the run already has a final
// object: it is never replaced.
var ErrFinalExists = errors.New("s3log: final log already stored")

// Metadata keys of the final object (sent as x-amz-meta-<key>).
const (
	MetaBytes        = "hangar-bytes"
	MetaSHA256       = "hangar-sha256"
	MetaLastSequence = "hangar-last-sequence"
	MetaTruncated    = "hangar-bytes-truncated"
	MetaIncomplete   = "hangar-incomplete"
)

// Client is the part of the S3 client used here.
type Client interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, opts ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, opts ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	UploadPartCopy(ctx context.Context, in *s3.UploadPartCopyInput, opts ...func(*s3.Options)) (*s3.UploadPartCopyOutput, error)
	CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, opts ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	ListMultipartUploads(ctx context.Context, in *s3.ListMultipartUploadsInput, opts ...func(*s3.Options)) (*s3.ListMultipartUploadsOutput, error)
}

// Store writes and reads the logs of one bucket and prefix.
type Store struct {
	client Client
	bucket string
	prefix string

	seconds   *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
}

// New returns a Store registering its metrics with reg.
func New(client Client, bucket, prefix string, reg prometheus.Registerer) (*Store, error) {
	s := &Store{
		client: client, bucket: bucket, prefix: prefix,
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hangar_logship_s3_upload_seconds",
			Help:    "Duration of S3 uploads of run logs, by object kind (chunk, final), failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"object"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hangar_logship_s3_upload_errors_total",
			Help: "S3 uploads of run logs that failed (and are retried), by object kind.",
		}, []string{"object"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hangar_logship_final_multipart_fallbacks_total",
			Help: "Final objects that could not be assembled from the live chunks (the S3 server does not implement multipart uploads or UploadPartCopy, refused a call, or answered a copy without the chunk's ETag) and were uploaded whole, by reason.",
		}, []string{"reason"}),
	}
	for _, object := range []string{"chunk", "final"} {
		s.errors.WithLabelValues(object) // exported at 0 from the start, for alerts
	}
	for _, reason := range []string{reasonNotImplemented, reasonRefused, reasonNoETag, reasonETagMismatch} {
		s.fallbacks.WithLabelValues(reason)
	}
	for _, c := range []prometheus.Collector{s.seconds, s.errors, s.fallbacks} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("s3log metrics: %w", err)
		}
	}
	return s, nil
}

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.bucket }

// ChunkKey is the key of a run's n-th live chunk (from 1).
func (s *Store) ChunkKey(runID string, n uint64) string {
	return fmt.Sprintf("%s%s/chunks/%08d.log", s.prefix, runID, n)
}

// FinalKey is the key of a run's final log.
func (s *Store) FinalKey(runID string) string { return s.prefix + runID + "/log" }

// PutChunk uploads a live chunk and returns its ETag (as S3 answered it,
// quotes included; "" if it answered none). Its body is not hashed for the
// signature (see withUnsignedPayload).
func (s *Store) PutChunk(ctx context.Context, runID string, n uint64, body io.ReadSeeker, size int64) (string, error) {
	return s.put(ctx, "chunk", s.ChunkKey(runID, n), body, size, nil, withUnsignedPayload)
}

// Final describes a final log.
type Final struct {
	Bytes        int64
	SHA256       string
	LastSequence uint64
	// Truncated is the number of masked bytes cut from the middle.
	Truncated int64
	// Incomplete: logship closed the log, its executor did not come back.
	Incomplete bool
}

// PutFinal uploads a run's final log, only if it has none yet
// (If-None-Match: *): ErrFinalExists if it has.
func (s *Store) PutFinal(ctx context.Context, runID string, body io.ReadSeeker, f Final) error {
	var opts []func(*s3.Options)
	if len(f.SHA256) == sha256.Size*2 {
		opts = append(opts, withPayloadSHA256(f.SHA256))
	}
	_, err := s.put(ctx, "final", s.FinalKey(runID), body, f.Bytes, f.metadata(), opts...)
	return s.finalErr(runID, err)
}

// finalErr turns S3's answer to a conditional write of runID's final
// object into ErrFinalExists when one is stored already.
func (s *Store) finalErr(runID string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode() == "PreconditionFailed" || apiErr.ErrorCode() == "ConditionalRequestConflict") {
		return fmt.Errorf("%w: s3://%s/%s", ErrFinalExists, s.bucket, s.FinalKey(runID))
	}
	return err
}

// metadata returns the final object's user metadata.
func (f Final) metadata() map[string]string {
	meta := map[string]string{
		MetaBytes:        strconv.FormatInt(f.Bytes, 10),
		MetaSHA256:       f.SHA256,
		MetaLastSequence: strconv.FormatUint(f.LastSequence, 10),
		MetaTruncated:    strconv.FormatInt(f.Truncated, 10),
	}
	if f.Incomplete {
		meta[MetaIncomplete] = "true"
	}
	return meta
}

// StatFinal describes a run's final object from its metadata; ErrNotFound
// if there is none.
func (s *Store) StatFinal(ctx context.Context, runID string) (Final, error) {
	key := s.FinalKey(runID)
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		var nf *types.NotFound
		var nsk *types.NoSuchKey
		var apiErr smithy.APIError
		if errors.As(err, &nf) || errors.As(err, &nsk) || errors.As(err, &apiErr) && apiErr.ErrorCode() == "NotFound" {
			return Final{}, ErrNotFound
		}
		return Final{}, fmt.Errorf("head s3://%s/%s: %w", s.bucket, key, err)
	}
	f := Final{Bytes: aws.ToInt64(out.ContentLength), SHA256: out.Metadata[MetaSHA256],
		Incomplete: out.Metadata[MetaIncomplete] == "true"}
	if n, err := strconv.ParseUint(out.Metadata[MetaLastSequence], 10, 64); err == nil {
		f.LastSequence = n
	}
	if n, err := strconv.ParseInt(out.Metadata[MetaTruncated], 10, 64); err == nil {
		f.Truncated = n
	}
	return f, nil
}

// DeleteChunks removes a run's live chunk objects 1..n (a missing one is
// no error).
func (s *Store) DeleteChunks(ctx context.Context, runID string, n uint64) error {
	for i := uint64(1); i <= n; i++ {
		key := s.ChunkKey(runID, i)
		if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}); err != nil {
			return fmt.Errorf("delete s3://%s/%s: %w", s.bucket, key, err)
		}
	}
	return nil
}

// withPayloadSHA256 signs a request with the SHA-256 of its body, known
// already (or with "UNSIGNED-PAYLOAD"), so that the SDK does not read the body once more to compute it
// (it does on plain HTTP endpoints; on HTTPS it would send the body
// unsigned). S3 then checks the body against it.
func withPayloadSHA256(hexDigest string) func(*s3.Options) {
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *smithymw.Stack) error {
			return stack.Finalize.Add(smithymw.FinalizeMiddlewareFunc("hangarPayloadSHA256",
				func(ctx context.Context, in smithymw.FinalizeInput, next smithymw.FinalizeHandler) (smithymw.FinalizeOutput, smithymw.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, hexDigest), in)
				}), smithymw.Before)
		})
	}
}

// withUnsignedPayload signs a request without its body's SHA-256
// (UNSIGNED-PAYLOAD), as the SDK does by itself on HTTPS; the request then
// asks for a CRC-32C checksum of the body (x-amz-checksum-crc32c, which S3
// checks; hardware-accelerated, about 20 times cheaper than SHA-256). On a
// plain HTTP endpoint the SDK would otherwise hash every live chunk and
// part with SHA-256 (2-3 ns per byte, as much as masking it), which
// logship avoided for the final object only by knowing the log's digest
// already.
func withUnsignedPayload(o *s3.Options) {
	withPayloadSHA256("UNSIGNED-PAYLOAD")(o)
}

func (s *Store) put(ctx context.Context, kind, key string, body io.ReadSeeker, size int64, meta map[string]string, opts ...func(*s3.Options)) (string, error) {
	start := time.Now()
	in := &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Body: body, ContentLength: aws.Int64(size),
		ContentType: aws.String("text/plain; charset=utf-8"), Metadata: meta,
	}
	if kind == "final" {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c // see withUnsignedPayload
	}
	out, err := s.client.PutObject(ctx, in, opts...)
	s.seconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	if err != nil {
		s.errors.WithLabelValues(kind).Inc()
		return "", fmt.Errorf("put s3://%s/%s: %w", s.bucket, key, err)
	}
	return aws.ToString(out.ETag), nil
}

// Object is a final log being read.
type Object struct {
	Body io.ReadCloser
	// Size is the final log's full size; Body starts at the requested
	// offset.
	Size int64
}

// GetFinal opens a run's final log from offset. It returns ErrNotFound if
// there is none. An offset at or past the end gives an empty Body.
func (s *Store) GetFinal(ctx context.Context, runID string, offset int64) (*Object, error) {
	key := s.FinalKey(runID)
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		var nsk *types.NoSuchKey
		var apiErr smithy.APIError
		switch {
		case errors.As(err, &nsk):
			return nil, ErrNotFound
		case errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidRange":
			// Offset at or past the end: read the size from the metadata.
			return s.emptyAt(ctx, key)
		}
		return nil, fmt.Errorf("get s3://%s/%s: %w", s.bucket, key, err)
	}
	size := offset + aws.ToInt64(out.ContentLength)
	if v, ok := out.Metadata[MetaBytes]; ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			size = n
		}
	}
	return &Object{Body: out.Body, Size: size}, nil
}

func (s *Store) emptyAt(ctx context.Context, key string) (*Object, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("head s3://%s/%s: %w", s.bucket, key, err)
	}
	size := aws.ToInt64(out.ContentLength)
	return &Object{Body: io.NopCloser(eofReader{}), Size: size}, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
