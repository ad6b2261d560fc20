package s3server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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
	for b.Loop() {
		if _, err := c.PutObject(b.Context(), &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("runs/r/log"),
			Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))}, signed); err != nil {
			b.Fatal(err)
		}
	}
}
