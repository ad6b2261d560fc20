package s3server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithymw "github.com/aws/smithy-go/middleware"
)

// BenchmarkPut is one PUT of 256 MiB into a directory (the dev stack's
// server), signed with the body's SHA-256 computed beforehand as logship
// does for its final logs, so that the client's hashing is left out: the
// server's cost (gofakes3's MD5 and checksum check, the file write, fsync).
func BenchmarkPut(b *testing.B) {
	body := bytes.Repeat([]byte("terraform: 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"), (256<<20)/76)
	sum := sha256.Sum256(body)
	signed := func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *smithymw.Stack) error {
			return stack.Finalize.Add(smithymw.FinalizeMiddlewareFunc("payloadSHA256",
				func(ctx context.Context, in smithymw.FinalizeInput, next smithymw.FinalizeHandler) (smithymw.FinalizeOutput, smithymw.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, hex.EncodeToString(sum[:])), in)
				}), smithymw.Before)
		})
	}
	srv, err := Start(b.Context(), Config{Addr: "127.0.0.1:0", AccessKey: testAccess, SecretKey: testSecret,
		Buckets: []string{testBucket}, Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c := client(srv.Endpoint(), testAccess, testSecret)
	b.SetBytes(int64(len(body)))
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := c.PutObject(b.Context(), &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
			Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))}, signed); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/float64(len(body)), "cpu-ns/B")
}

// BenchmarkPutChunk is logship's live chunk: 16 MiB PUTs signed with
// UNSIGNED-PAYLOAD and a CRC-32C in the x-amz-checksum-crc32c header (the
// SDK computes it over the body before sending, as on any plain HTTP
// endpoint), 16 per iteration (256 MiB) into a directory. cpu-ns/B is the
// process's CPU time per byte: the client's CRC-32C and send, the server's
// checks, file writes and fsyncs.
func BenchmarkPutChunk(b *testing.B) {
	const chunks, chunkSize = 16, 16 << 20
	chunk := bytes.Repeat([]byte("terraform: 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"), chunkSize/76+1)[:chunkSize]
	unsigned := func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *smithymw.Stack) error {
			return stack.Finalize.Add(smithymw.FinalizeMiddlewareFunc("unsignedPayload",
				func(ctx context.Context, in smithymw.FinalizeInput, next smithymw.FinalizeHandler) (smithymw.FinalizeOutput, smithymw.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, "UNSIGNED-PAYLOAD"), in)
				}), smithymw.Before)
		})
	}
	srv, err := Start(b.Context(), Config{Addr: "127.0.0.1:0", AccessKey: testAccess, SecretKey: testSecret,
		Buckets: []string{testBucket}, Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c := client(srv.Endpoint(), testAccess, testSecret)
	b.SetBytes(chunks * chunkSize)
	cpu0 := cpuTime()
	for b.Loop() {
		for i := range chunks {
			if _, err := c.PutObject(b.Context(), &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(chunkKey(i)),
				Body: bytes.NewReader(chunk), ContentLength: aws.Int64(chunkSize), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c}, unsigned); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/(chunks*chunkSize), "cpu-ns/B")
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkComplete assembles a 256 MiB object from 16 objects of 16 MiB
// stored before (logship's live chunks): a multipart upload of 16
// UploadPartCopy (hard links) and a Complete (16 more hard links, a header
// listing them, two directory fsyncs and the rename: no body byte copied).
// To compare with BenchmarkPut, the same 256 MiB sent whole.
func BenchmarkComplete(b *testing.B) {
	const parts, partSize = 16, 16 << 20
	srv, err := Start(b.Context(), Config{Addr: "127.0.0.1:0", AccessKey: testAccess, SecretKey: testSecret,
		Buckets: []string{testBucket}, Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c := client(srv.Endpoint(), testAccess, testSecret)
	ctx := b.Context()
	chunk := bytes.Repeat([]byte("terraform: 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"), partSize/76+1)[:partSize]
	for i := range parts {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(chunkKey(i)),
			Body: bytes.NewReader(chunk), ContentLength: aws.Int64(partSize)}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(parts * partSize)
	for n := 0; b.Loop(); n++ {
		key := aws.String("runs/r/log-" + strconv.Itoa(n))
		up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(testBucket), Key: key})
		if err != nil {
			b.Fatal(err)
		}
		var done []types.CompletedPart
		for i := range parts {
			out, err := c.UploadPartCopy(ctx, &s3.UploadPartCopyInput{Bucket: aws.String(testBucket), Key: key, UploadId: up.UploadId,
				PartNumber: aws.Int32(int32(i + 1)), CopySource: aws.String(testBucket + "/" + chunkKey(i))})
			if err != nil {
				b.Fatal(err)
			}
			done = append(done, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.CopyPartResult.ETag})
		}
		if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(testBucket), Key: key,
			UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}); err != nil {
			b.Fatal(err)
		}
	}
}
