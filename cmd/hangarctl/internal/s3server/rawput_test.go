package s3server

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithymw "github.com/aws/smithy-go/middleware"
)

// plainClient is a client that sends no checksum unless told to (the
// SDK's default is a CRC-32 on every PUT).
func plainClient(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                client(endpoint, testAccess, testSecret).Options().Credentials,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	})
}

// TestPutDigests: a PUT's body is still checked against the Content-MD5
// and the x-amz-checksum-<algorithm> header the client sends, now that
// the dir backend reads it past gofakes3's readers (ADR 0025): a body
// that differs is refused with BadDigest and leaves the stored object as
// it was; a malformed Content-MD5 is InvalidDigest; a body that matches
// is stored, its ETag the MD5 when a Content-MD5 was sent. In memory too
// (gofakes3's own checks), for comparison.
func TestPutDigests(t *testing.T) {
	body := []byte("terraform: Apply complete! Resources: 3 added, 0 changed, 0 destroyed.\n")
	sum := md5.Sum(body)
	goodMD5 := base64.StdEncoding.EncodeToString(sum[:])
	badMD5 := base64.StdEncoding.EncodeToString(make([]byte, md5.Size))
	wrong4 := base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4})
	wrong32 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cases := []struct {
		name     string
		in       s3.PutObjectInput
		code     string // "" if stored
		wantETag string // if stored and not ""
	}{
		{name: "Content-MD5 right", in: s3.PutObjectInput{ContentMD5: aws.String(goodMD5)}, wantETag: `"` + hex.EncodeToString(sum[:]) + `"`},
		{name: "Content-MD5 wrong", in: s3.PutObjectInput{ContentMD5: aws.String(badMD5)}, code: "BadDigest"},
		{name: "Content-MD5 malformed", in: s3.PutObjectInput{ContentMD5: aws.String("not-base64!")}, code: "InvalidDigest"},
		{name: "Content-MD5 too short", in: s3.PutObjectInput{ContentMD5: aws.String(wrong4)}, code: "InvalidDigest"},
		{name: "CRC-32C right", in: s3.PutObjectInput{ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c}},
		{name: "CRC-32C wrong", in: s3.PutObjectInput{ChecksumCRC32C: aws.String(wrong4)}, code: "BadDigest"},
		{name: "CRC-32 right", in: s3.PutObjectInput{ChecksumAlgorithm: types.ChecksumAlgorithmCrc32}},
		{name: "CRC-32 wrong", in: s3.PutObjectInput{ChecksumCRC32: aws.String(wrong4)}, code: "BadDigest"},
		{name: "CRC-64/NVME right", in: s3.PutObjectInput{ChecksumAlgorithm: types.ChecksumAlgorithmCrc64nvme}},
		{name: "SHA-1 right", in: s3.PutObjectInput{ChecksumAlgorithm: types.ChecksumAlgorithmSha1}},
		{name: "SHA-256 right", in: s3.PutObjectInput{ChecksumAlgorithm: types.ChecksumAlgorithmSha256}},
		{name: "SHA-256 wrong", in: s3.PutObjectInput{ChecksumSHA256: aws.String(wrong32)}, code: "BadDigest"},
		{name: "Content-MD5 right, CRC-32C wrong", in: s3.PutObjectInput{ContentMD5: aws.String(goodMD5), ChecksumCRC32C: aws.String(wrong4)}, code: "BadDigest"},
		{name: "neither"},
	}
	for _, backend := range []struct{ name, dir string }{{"memory", ""}, {"dir", t.TempDir()}} {
		t.Run(backend.name, func(t *testing.T) {
			ctx := t.Context()
			c := plainClient(start(t, backend.dir).Endpoint())
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					const key = "runs/r/chunks/00000001.log"
					put(ctx, t, c, key, []byte("stored before"), nil)
					in := tc.in
					in.Bucket, in.Key, in.Body = aws.String(testBucket), aws.String(key), bytes.NewReader(body)
					out, err := c.PutObject(ctx, &in)
					got, _ := get(ctx, t, c, key)
					if tc.code != "" {
						var apiErr smithy.APIError
						if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tc.code {
							t.Fatalf("PutObject: %v, want %s", err, tc.code)
						}
						if string(got) != "stored before" {
							t.Errorf("after a refused PUT the object is %q, want it unchanged", got)
						}
						return
					}
					if err != nil {
						t.Fatalf("PutObject: %v", err)
					}
					if !bytes.Equal(got, body) {
						t.Errorf("stored %q, want %q", got, body)
					}
					if etag := aws.ToString(out.ETag); tc.wantETag != "" && etag != tc.wantETag {
						t.Errorf("ETag %s, want the MD5 %s", etag, tc.wantETag)
					}
				})
			}
		})
	}
}

// TestPutETagPerWrite: in a directory, the ETag of a PUT sent without a
// Content-MD5 names that write, not the body (ADR 0025): the same body
// put twice gets two ETags, 32 hex digits each (no MD5 of the body is
// computed for it), and the object keeps its ETag in HEAD, GET, the
// listing, CopyObject and UploadPartCopy, and If-Match honours it.
func TestPutETagPerWrite(t *testing.T) {
	ctx := t.Context()
	c := plainClient(start(t, t.TempDir()).Endpoint())
	body := bytes.Repeat([]byte("the same line\n"), 1000)
	var etags []string
	for range 2 {
		out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("k"), Body: bytes.NewReader(body)})
		if err != nil {
			t.Fatal(err)
		}
		etags = append(etags, aws.ToString(out.ETag))
	}
	hex32 := regexp.MustCompile(`^"[0-9a-f]{32}"$`)
	if !hex32.MatchString(etags[0]) || !hex32.MatchString(etags[1]) || etags[0] == etags[1] {
		t.Fatalf("ETags of two PUTs of one body: %q; want two different ones of 32 hex digits", etags)
	}
	etag := etags[1]

	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("k")})
	if err != nil || aws.ToString(head.ETag) != etag {
		t.Errorf("HEAD: %v, ETag %s; want %s", err, aws.ToString(head.ETag), etag)
	}
	got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String("k")})
	if err != nil || aws.ToString(got.ETag) != etag {
		t.Errorf("GET: %v, ETag %s; want %s", err, aws.ToString(got.ETag), etag)
	} else {
		got.Body.Close()
	}
	ls, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket)})
	if err != nil || len(ls.Contents) != 1 || aws.ToString(ls.Contents[0].ETag) != etag {
		t.Errorf("list: %v, %+v; want one object of ETag %s", err, ls, etag)
	}
	cp, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(testBucket), Key: aws.String("copy"), CopySource: aws.String(testBucket + "/k")})
	if err != nil || aws.ToString(cp.CopyObjectResult.ETag) != etag {
		t.Errorf("CopyObject: %v; want ETag %s", err, etag)
	}
	m := multipartClient{t, c}
	id := m.create("final")
	if part := m.copyPart("final", id, 1, "k"); part != etag {
		t.Errorf("UploadPartCopy: ETag %s, want %s", part, etag)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("k"),
		Body: strings.NewReader("x"), IfMatch: aws.String(etags[0])}); err == nil {
		t.Error("PUT with If-Match of the replaced write's ETag succeeded")
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("k"),
		Body: strings.NewReader("x"), IfMatch: aws.String(etag)}); err != nil {
		t.Errorf("PUT with If-Match of the stored ETag: %v", err)
	}
}

// TestLogshipAssembly: logship's final log against the dir backend, with
// the calls and checks of services/logship's s3log (PutChunk and
// PutFinalParts; that package is internal to logship, so they are written
// again here): live chunks put with UNSIGNED-PAYLOAD and a CRC-32C, the
// final object a multipart upload of UploadPartCopy of them, each copy's
// ETag equal to the chunk's, completed with If-None-Match: *; the object
// is the chunks' bytes, and a second assembly is refused.
func TestLogshipAssembly(t *testing.T) {
	ctx := t.Context()
	c := client(start(t, t.TempDir()).Endpoint(), testAccess, testSecret)
	unsigned := func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *smithymw.Stack) error {
			return stack.Finalize.Add(smithymw.FinalizeMiddlewareFunc("unsignedPayload",
				func(ctx context.Context, in smithymw.FinalizeInput, next smithymw.FinalizeHandler) (smithymw.FinalizeOutput, smithymw.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, "UNSIGNED-PAYLOAD"), in)
				}), smithymw.Before)
		})
	}
	chunks := [][]byte{randBytes(t, 5<<20), randBytes(t, 6<<20), []byte("the last chunk\n")}
	var etags []string
	var want []byte
	for i, b := range chunks {
		out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(chunkKey(i)),
			Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b))), ContentType: aws.String("text/plain; charset=utf-8"),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c}, unsigned)
		if err != nil {
			t.Fatalf("PutChunk %d: %v", i+1, err)
		}
		etags = append(etags, aws.ToString(out.ETag))
		want = append(want, b...)
	}
	assemble := func() error {
		up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
			Metadata: map[string]string{"hangar-bytes": "11534351"}})
		if err != nil {
			return err
		}
		var done []types.CompletedPart
		for i := range chunks {
			out, err := c.UploadPartCopy(ctx, &s3.UploadPartCopyInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
				UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)),
				CopySource: aws.String(url.PathEscape(testBucket) + "/" + chunkKey(i))})
			if err != nil {
				return err
			}
			if got := strings.Trim(aws.ToString(out.CopyPartResult.ETag), `"`); got != strings.Trim(etags[i], `"`) {
				t.Fatalf("copy of chunk %d has ETag %s, the chunk was stored with %s", i+1, got, etags[i])
			}
			done = append(done, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.CopyPartResult.ETag})
		}
		_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
			UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}, IfNoneMatch: aws.String("*")})
		return err
	}
	if err := assemble(); err != nil {
		t.Fatalf("assembly: %v", err)
	}
	if got, meta := get(ctx, t, c, "runs/r/log"); !bytes.Equal(got, want) || meta["hangar-bytes"] != "11534351" {
		t.Errorf("final object: %d bytes (want %d), metadata %v", len(got), len(want), meta)
	}
	var apiErr smithy.APIError
	if err := assemble(); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "PreconditionFailed" {
		t.Errorf("second assembly: %v, want PreconditionFailed", err)
	}
}
