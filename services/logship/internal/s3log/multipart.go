package s3log

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// MinPartSize is S3's smallest part of a multipart upload but the last.
const MinPartSize = 5 << 20

// ErrMultipartUnsupported is returned by PutFinalParts when the server
// cannot assemble the final object from the live chunks: it does not
// implement multipart uploads or UploadPartCopy, refused one of the calls
// (a 4xx answer but a failed If-None-Match), or answered a copy without
// the chunk's ETag or with another. The upload is aborted; the caller puts
// the log whole (PutFinal).
var ErrMultipartUnsupported = errors.New("s3log: final object cannot be assembled from the live chunks")

// Reasons of hangar_logship_final_multipart_fallbacks_total.
const (
	reasonNotImplemented = "not_implemented"
	reasonNoETag         = "no_etag"
	reasonETagMismatch   = "etag_mismatch"
	reasonRefused        = "refused"
)

// Part is one part of a final object assembled by PutFinalParts: a copy of
// live chunk Chunk (from 1) whose ETag, as PutChunk answered it, is ETag,
// or, with Chunk 0, the Size bytes of the log from Offset, sent.
type Part struct {
	Chunk  uint64
	ETag   string
	Offset int64
	Size   int64
}

// PutFinalParts stores a run's final log as a multipart upload of parts
// (in order: their concatenation is the log, every part but the last at
// least MinPartSize), reading the sent parts from log. Its metadata is
// set at CreateMultipartUpload; CompleteMultipartUpload carries
// If-None-Match: *, so a stored log is never replaced (ErrFinalExists).
// Every copy's answer must carry the chunk's ETag. Whatever fails, the
// upload is aborted; ErrMultipartUnsupported when the server cannot do it
// (see there).
func (s *Store) PutFinalParts(ctx context.Context, runID string, parts []Part, log io.ReaderAt, f Final) (err error) {
	start := time.Now()
	key := s.FinalKey(runID)
	defer func() {
		s.seconds.WithLabelValues("final").Observe(time.Since(start).Seconds())
		if err != nil && !errors.Is(err, ErrFinalExists) && !errors.Is(err, ErrMultipartUnsupported) {
			s.errors.WithLabelValues("final").Inc()
		}
	}()
	created, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), Metadata: f.metadata(),
		ContentType: aws.String("text/plain; charset=utf-8"),
	})
	if err != nil {
		return s.unsupported(fmt.Errorf("create multipart upload s3://%s/%s: %w", s.bucket, key, err))
	}
	uploadID := created.UploadId
	defer func() {
		if err == nil {
			return
		}
		// Abort even when ctx is done (logship stopping): a part left
		// behind is billed until a lifecycle rule removes it.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: uploadID}); aerr != nil {
			err = errors.Join(err, fmt.Errorf("abort multipart upload s3://%s/%s: %w", s.bucket, key, aerr))
		}
	}()
	done := make([]types.CompletedPart, 0, len(parts))
	for i, p := range parts {
		n := aws.Int32(int32(i + 1))
		var etag *string
		if p.Chunk > 0 {
			src := s.ChunkKey(runID, p.Chunk)
			out, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
				Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: uploadID, PartNumber: n,
				CopySource: aws.String(url.PathEscape(s.bucket) + "/" + escapeKey(src)),
			})
			if err != nil {
				return s.unsupported(fmt.Errorf("copy s3://%s/%s as part %d: %w", s.bucket, src, i+1, err))
			}
			if out.CopyPartResult == nil || aws.ToString(out.CopyPartResult.ETag) == "" {
				s.fallbacks.WithLabelValues(reasonNoETag).Inc()
				return fmt.Errorf("%w: copy of s3://%s/%s answered without an ETag", ErrMultipartUnsupported, s.bucket, src)
			}
			etag = out.CopyPartResult.ETag
			if unquote(*etag) != unquote(p.ETag) {
				s.fallbacks.WithLabelValues(reasonETagMismatch).Inc()
				return fmt.Errorf("%w: copy of s3://%s/%s has ETag %s, the chunk was stored with %s",
					ErrMultipartUnsupported, s.bucket, src, *etag, p.ETag)
			}
		} else {
			out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
				Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: uploadID, PartNumber: n,
				Body: io.NewSectionReader(log, p.Offset, p.Size), ContentLength: aws.Int64(p.Size),
				ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c,
			}, withUnsignedPayload)
			if err != nil {
				return s.unsupported(fmt.Errorf("upload part %d of s3://%s/%s: %w", i+1, s.bucket, key, err))
			}
			etag = out.ETag
		}
		done = append(done, types.CompletedPart{ETag: etag, PartNumber: n})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}, IfNoneMatch: aws.String("*"),
	})
	if err != nil {
		err = s.finalErr(runID, fmt.Errorf("complete multipart upload s3://%s/%s: %w", s.bucket, key, err))
		if errors.Is(err, ErrFinalExists) {
			return err
		}
		return s.unsupported(err)
	}
	return nil
}

// AbortUploads aborts the multipart uploads of runID's final object that
// are in progress: those a logship left when it stopped during the
// assembly (at most one page of the listing, 1000). It returns how many
// it aborted.
func (s *Store) AbortUploads(ctx context.Context, runID string) (int, error) {
	key := s.FinalKey(runID)
	out, err := s.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(key)})
	if err != nil {
		return 0, fmt.Errorf("list multipart uploads s3://%s/%s: %w", s.bucket, key, err)
	}
	n := 0
	for _, u := range out.Uploads {
		if aws.ToString(u.Key) != key {
			continue
		}
		if _, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: u.UploadId}); err != nil {
			return n, fmt.Errorf("abort multipart upload s3://%s/%s: %w", s.bucket, key, err)
		}
		n++
	}
	return n, nil
}

// unsupported marks err as ErrMultipartUnsupported (and counts it) when
// the server answered NotImplemented, or refused the request (another
// client error: a copy source gone, a server with other part rules, a
// policy without the multipart actions): sending the request again would
// not help, putting the log whole may. Server errors and network errors
// are left as they are, to be retried.
func (s *Store) unsupported(err error) error {
	var apiErr smithy.APIError
	var respErr *awshttp.ResponseError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "NotImplemented":
		s.fallbacks.WithLabelValues(reasonNotImplemented).Inc()
	case errors.As(err, &respErr) && respErr.HTTPStatusCode() >= 400 && respErr.HTTPStatusCode() < 500:
		s.fallbacks.WithLabelValues(reasonRefused).Inc()
	default:
		return err
	}
	return fmt.Errorf("%w: %w", ErrMultipartUnsupported, err)
}

// escapeKey escapes a key for x-amz-copy-source, its slashes kept.
func escapeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return strings.Join(segs, "/")
}

func unquote(etag string) string { return strings.Trim(etag, `"`) }
