package s3server

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// TestDirMultipart: the dir backend's multipart uploads over the S3 API.
// A whole-object UploadPartCopy is a hard link to the object's file (no
// byte read or hashed: its ETag is the object's), a part sent is
// streamed to a file, Complete makes of them an object with the metadata
// given at Create (segment_test.go: without copying them), honours If-None-Match: *, refuses an ETag that is not the
// part's, parts in the wrong order and a part but the last under 5 MiB;
// Abort removes the upload; uploads left behind are removed at start.
func TestDirMultipart(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, dir)
	c := client(srv.Endpoint(), testAccess, testSecret)
	ctx := t.Context()

	chunks := [][]byte{randBytes(t, 6<<20), randBytes(t, 5<<20)}
	var etags []string
	for i, b := range chunks {
		// As logship puts its live chunks: with a CRC-32C checksum (their
		// ETags are per write, ADR 0025).
		out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(chunkKey(i)), Body: bytes.NewReader(b),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c})
		if err != nil {
			t.Fatal(err)
		}
		etags = append(etags, aws.ToString(out.ETag))
	}
	last := []byte("the last part, short\n")

	m := multipartClient{t, c}
	create, copyPart, sendPart := m.create, m.copyPart, m.sendPart
	complete := func(key string, id *string, etags ...string) error {
		_, err := m.tryComplete(key, id, aws.String("*"), etags...)
		return err
	}
	uploadDir := func(id *string) string { return filepath.Join(dir, testBucket, uploadPrefix+aws.ToString(id)) }

	id := create("final")
	var got []string
	for i := range chunks {
		got = append(got, copyPart("final", id, int32(i+1), chunkKey(i)))
		part, err1 := os.Stat(filepath.Join(uploadDir(id), partName(i+1)))
		obj, err2 := os.Stat(filepath.Join(dir, testBucket, base64.RawURLEncoding.EncodeToString([]byte(chunkKey(i)))))
		if err1 != nil || err2 != nil || !os.SameFile(part, obj) {
			t.Errorf("copied part %d is not a hard link to the object's file (%v, %v)", i+1, err1, err2)
		}
	}
	if got[0] != etags[0] || got[1] != etags[1] {
		t.Errorf("copied parts' ETags %q, the objects' %q", got, etags)
	}
	got = append(got, sendPart("final", id, 3, last))
	if err := complete("final", id, got[0], got[2], got[1]); !hasCode(err, "InvalidPart") {
		t.Errorf("Complete with another part's ETag: %v, want InvalidPart", err)
	}
	if err := complete("final", id, got...); err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), chunks[0]...), chunks[1]...), last...)
	body, meta := get(ctx, t, c, "final")
	if !bytes.Equal(body, want) || meta["hangar-bytes"] != "42" {
		t.Errorf("assembled object: %d bytes (want %d), metadata %v", len(body), len(want), meta)
	}
	if _, err := os.Stat(uploadDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("upload directory left after Complete: %v", err)
	}
	if keys := list(ctx, t, c, ""); len(keys) != 3 {
		t.Errorf("keys %q", keys)
	}

	// If-None-Match: * on Complete: the stored object stays.
	id = create("final")
	p1 := copyPart("final", id, 1, chunkKey(0))
	if err := complete("final", id, p1); !hasCode(err, "PreconditionFailed") {
		t.Errorf("Complete over a stored object: %v, want PreconditionFailed", err)
	}
	if body, _ := get(ctx, t, c, "final"); !bytes.Equal(body, want) {
		t.Error("stored object replaced")
	}
	if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String("final"), UploadId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(uploadDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("upload directory left after Abort: %v", err)
	}

	// A part but the last under 5 MiB; parts out of order.
	id = create("small")
	a, b := sendPart("small", id, 1, []byte("tiny")), sendPart("small", id, 2, chunks[1])
	if err := complete("small", id, a, b); !hasCode(err, "EntityTooSmall") {
		t.Errorf("Complete with a small first part: %v, want EntityTooSmall", err)
	}
	_, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String("small"), UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{
			{PartNumber: aws.Int32(2), ETag: aws.String(b)}, {PartNumber: aws.Int32(1), ETag: aws.String(a)}}}})
	if !hasCode(err, "InvalidPartOrder") {
		t.Errorf("Complete with parts out of order: %v, want InvalidPartOrder", err)
	}

	// Left behind: removed at start.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	start(t, dir)
	if _, err := os.Stat(uploadDir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("upload left behind not removed at start: %v", err)
	}
}

func chunkKey(i int) string { return fmt.Sprintf("runs/r/chunks/%08d.log", i+1) }

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func hasCode(err error, code string) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == code
}
