package s3server

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/rclone/gofakes3"
)

// multipartClient runs multipart uploads in testBucket over the S3 API.
type multipartClient struct {
	t *testing.T
	c *s3.Client
}

func (m multipartClient) create(key string) *string {
	m.t.Helper()
	out, err := m.c.CreateMultipartUpload(m.t.Context(), &s3.CreateMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(key),
		Metadata: map[string]string{"hangar-bytes": "42"}})
	if err != nil {
		m.t.Fatal(err)
	}
	return out.UploadId
}

func (m multipartClient) copyPart(key string, id *string, n int32, src string) string {
	m.t.Helper()
	out, err := m.c.UploadPartCopy(m.t.Context(), &s3.UploadPartCopyInput{Bucket: aws.String(testBucket), Key: aws.String(key), UploadId: id,
		PartNumber: aws.Int32(n), CopySource: aws.String(testBucket + "/" + src)})
	if err != nil {
		m.t.Fatal(err)
	}
	return aws.ToString(out.CopyPartResult.ETag)
}

func (m multipartClient) sendPart(key string, id *string, n int32, body []byte) string {
	m.t.Helper()
	out, err := m.c.UploadPart(m.t.Context(), &s3.UploadPartInput{Bucket: aws.String(testBucket), Key: aws.String(key), UploadId: id,
		PartNumber: aws.Int32(n), Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))})
	if err != nil {
		m.t.Fatal(err)
	}
	return aws.ToString(out.ETag)
}

// complete completes upload id with parts 1..len(etags); it returns the
// object's ETag.
func (m multipartClient) complete(key string, id *string, etags ...string) string {
	m.t.Helper()
	etag, err := m.tryComplete(key, id, nil, etags...)
	if err != nil {
		m.t.Fatal(err)
	}
	return etag
}

// tryComplete completes upload id with parts 1..len(etags), If-None-Match
// ifNoneMatch if not nil.
func (m multipartClient) tryComplete(key string, id, ifNoneMatch *string, etags ...string) (string, error) {
	var parts []types.CompletedPart
	for i, e := range etags {
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: aws.String(e)})
	}
	out, err := m.c.CompleteMultipartUpload(m.t.Context(), &s3.CompleteMultipartUploadInput{Bucket: aws.String(testBucket), Key: aws.String(key),
		UploadId: id, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}, IfNoneMatch: ifNoneMatch})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.ETag), nil
}

// multipartETag is S3's multipart ETag without its "-<parts>" suffix: the
// MD5 of the parts' MD5s.
func multipartETag(t *testing.T, etags ...string) string {
	t.Helper()
	h := md5.New()
	for _, e := range etags {
		sum, err := hex.DecodeString(strings.Trim(e, `"`))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(sum)
	}
	return `"` + hex.EncodeToString(h.Sum(nil)) + `"`
}

func objectFile(dir, key string) string {
	return filepath.Join(dir, testBucket, base64.RawURLEncoding.EncodeToString([]byte(key)))
}

func getRange(t *testing.T, c *s3.Client, key, rng string) []byte {
	t.Helper()
	out, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Range: aws.String(rng)})
	if err != nil {
		t.Fatalf("GET %s %s: %v", key, rng, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("GET %s %s: %v", key, rng, err)
	}
	return b
}

// diskUse is the space allocated to the distinct files under dir (a file
// with several links counted once), and how many links each of the files
// named has.
func diskUse(t *testing.T, dir string, files ...string) (int64, []uint64) {
	t.Helper()
	seen := map[uint64]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			return err
		}
		if !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var links []uint64
	for _, f := range files {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			t.Fatal(err)
		}
		links = append(links, uint64(st.Nlink))
	}
	return total, links
}

// dotEntries lists the names in the bucket's directory that begin with a
// dot: uploads, temporary files, segment directories.
func dotEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, testBucket))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestDirCompleteWritesNoBody: an object completed from copied and sent
// parts takes no more room on disk than its parts (the parts are its
// segments: the copied chunks' files gain a link), reads back whole and
// by ranges across part boundaries byte for byte, has S3's multipart ETag
// in the answer to Complete, HEAD and the listing with its size, survives
// the removal of the chunks it was copied from and a restart, can be
// copied (CopyObject, UploadPartCopy), replaced by a PUT with If-Match
// (a GET begun before still reads it whole), and deleted, leaving nothing
// behind.
func TestDirCompleteWritesNoBody(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, dir)
	c := client(srv.Endpoint(), testAccess, testSecret)
	m := multipartClient{t, c}
	ctx := t.Context()

	chunks := [][]byte{randBytes(t, 6<<20), randBytes(t, 5<<20+3)}
	var chunkFiles []string
	for i, b := range chunks {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(chunkKey(i)), Body: bytes.NewReader(b),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c}); err != nil {
			t.Fatal(err)
		}
		chunkFiles = append(chunkFiles, objectFile(dir, chunkKey(i)))
	}
	sent := [][]byte{randBytes(t, 5<<20+1), []byte("the last part, short\n")}
	before, _ := diskUse(t, dir)

	id := m.create("final")
	etags := []string{
		m.copyPart("final", id, 1, chunkKey(0)),
		m.sendPart("final", id, 2, sent[0]),
		m.copyPart("final", id, 3, chunkKey(1)),
		m.sendPart("final", id, 4, sent[1]),
	}
	etag := m.complete("final", id, etags...)
	want := bytes.Join([][]byte{chunks[0], sent[0], chunks[1], sent[1]}, nil)
	if etag != multipartETag(t, etags...) {
		t.Errorf("Complete's ETag %s, want the MD5 of the parts' MD5s %s", etag, multipartETag(t, etags...))
	}

	after, links := diskUse(t, dir, chunkFiles...)
	if grown := after - before; grown > int64(len(sent[0])+len(sent[1]))+1<<20 {
		t.Errorf("Complete of %d bytes (%d sent as parts) took %d bytes more on disk: the bodies were written again", len(want), len(sent[0])+len(sent[1]), grown)
	}
	for i, n := range links {
		if n != 2 {
			t.Errorf("chunk %d's file has %d links after Complete, want 2 (its own, the object's segment)", i, n)
		}
	}

	check := func(when string) {
		t.Helper()
		if body, meta := get(ctx, t, c, "final"); !bytes.Equal(body, want) || meta["hangar-bytes"] != "42" {
			t.Errorf("%s: GET: %d bytes (want %d, equal %v), metadata %v", when, len(body), len(want), bytes.Equal(body, want), meta)
		}
		b1, b2, b3 := int64(len(chunks[0])), int64(len(chunks[0])+len(sent[0])), int64(len(chunks[0])+len(sent[0])+len(chunks[1]))
		size := int64(len(want))
		for _, r := range [][2]int64{
			{0, 0}, {b1 - 10, b1 + 9}, {b1, b1}, {b1 - 1, b2}, {100, b3 + 5}, {b2 + 7, b2 + 1000},
			{b3 - 1, size - 1}, {b3, size - 1}, {size - 1, size - 1},
		} {
			if got := getRange(t, c, "final", fmt.Sprintf("bytes=%d-%d", r[0], r[1])); !bytes.Equal(got, want[r[0]:r[1]+1]) {
				t.Errorf("%s: GET bytes=%d-%d: %d bytes, not the object's", when, r[0], r[1], len(got))
			}
		}
		if got := getRange(t, c, "final", fmt.Sprintf("bytes=%d-", b1+3)); !bytes.Equal(got, want[b1+3:]) {
			t.Errorf("%s: GET bytes=%d-: not the object's", when, b1+3)
		}
		if got := getRange(t, c, "final", "bytes=-30"); !bytes.Equal(got, want[size-30:]) {
			t.Errorf("%s: GET bytes=-30: %q", when, got)
		}
		head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("final")})
		if err != nil || aws.ToString(head.ETag) != etag || aws.ToInt64(head.ContentLength) != size {
			t.Errorf("%s: HEAD: %v, ETag %s, %d bytes; want %s, %d", when, err, aws.ToString(head.ETag), aws.ToInt64(head.ContentLength), etag, size)
		}
		out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String("final")})
		if err != nil || len(out.Contents) != 1 || aws.ToInt64(out.Contents[0].Size) != size || aws.ToString(out.Contents[0].ETag) != etag {
			t.Errorf("%s: listing: %v, %+v", when, err, out)
		}
	}
	check("completed")

	// The chunks removed (as logship does): the object keeps its bytes.
	var del []types.ObjectIdentifier
	for i := range chunks {
		del = append(del, types.ObjectIdentifier{Key: aws.String(chunkKey(i))})
	}
	if out, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(testBucket), Delete: &types.Delete{Objects: del}}); err != nil || len(out.Errors) > 0 {
		t.Fatalf("DeleteObjects: %v %v", err, out)
	}
	check("chunks deleted")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv = start(t, dir)
	c = client(srv.Endpoint(), testAccess, testSecret)
	m = multipartClient{t, c}
	check("after a restart")

	// Copies of it: CopyObject, and an UploadPartCopy of all of it.
	cp, err := c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(testBucket), Key: aws.String("copy"), CopySource: aws.String(testBucket + "/final")})
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := get(ctx, t, c, "copy"); !bytes.Equal(body, want) || aws.ToString(cp.CopyObjectResult.ETag) != etag {
		t.Errorf("CopyObject: %d bytes, ETag %s", len(body), aws.ToString(cp.CopyObjectResult.ETag))
	}
	id = m.create("again")
	p1 := m.copyPart("again", id, 1, "final")
	m.complete("again", id, p1, m.sendPart("again", id, 2, []byte("more")))
	if body, _ := get(ctx, t, c, "again"); !bytes.Equal(body, append(append([]byte(nil), want...), "more"...)) || p1 != etag {
		t.Errorf("an object with a copy of the completed one as its first part: %d bytes, part ETag %s", len(body), p1)
	}

	// If-Match with its ETag replaces it; its segments go, but not from
	// under a GET begun before.
	reading, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String("final")})
	if err != nil {
		t.Fatal(err)
	}
	defer reading.Body.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(reading.Body, head); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("final"),
		Body: strings.NewReader("other"), IfMatch: aws.String(`"00000000000000000000000000000000"`)}); !hasCode(err, "PreconditionFailed") {
		t.Errorf("PUT with If-Match of another ETag: %v", err)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String("final"),
		Body: strings.NewReader("replaced"), IfMatch: aws.String(etag)}); err != nil {
		t.Errorf("PUT with If-Match of the completed object's ETag: %v", err)
	}
	if body, _ := get(ctx, t, c, "final"); string(body) != "replaced" {
		t.Errorf("after the PUT: %d bytes", len(body))
	}
	if rest, err := io.ReadAll(reading.Body); err != nil || !bytes.Equal(append(head, rest...), want) {
		t.Errorf("a GET begun before the PUT: %d bytes, %v; want the object replaced", len(head)+len(rest), err)
	}
	// Deleted, both the plain and the segmented one.
	for _, key := range []string{"final", "again"} {
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)}); err != nil {
			t.Fatal(err)
		}
	}
	if keys := list(ctx, t, c, ""); len(keys) != 1 || keys[0] != "copy" {
		t.Errorf("keys left %q, want [copy]", keys)
	}
	if left := dotEntries(t, dir); len(left) != 0 {
		t.Errorf("left in the bucket's directory: %q", left)
	}
}

// TestDirCompleteStopped: a stop after Complete has written the segments
// and the new header but before the header is installed leaves the object
// it was to replace (here a completed one too), and the start after it
// removes what was written (and a PUT's temporary file, and a segment
// directory no object names) but not the segments of the objects.
func TestDirCompleteStopped(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, dir)
	c := client(srv.Endpoint(), testAccess, testSecret)
	m := multipartClient{t, c}
	ctx := t.Context()

	chunk := randBytes(t, 5<<20)
	put(ctx, t, c, chunkKey(0), chunk, nil)
	id := m.create("final")
	m.complete("final", id, m.copyPart("final", id, 1, chunkKey(0)), m.sendPart("final", id, 2, []byte("old tail")))
	old := append(append([]byte(nil), chunk...), "old tail"...)

	id = m.create("final")
	parts := []string{m.copyPart("final", id, 1, chunkKey(0)), m.sendPart("final", id, 2, []byte("new tail"))}
	var completed []gofakes3.CompletedPart
	for i, e := range parts {
		completed = append(completed, gofakes3.CompletedPart{PartNumber: i + 1, ETag: e})
	}
	b := &dirBackend{dir: dir}
	tmp, segDir, _, err := b.assemble("final", nil, b.objectPath(testBucket, "final"), b.uploadDir(testBucket, gofakes3.UploadID(aws.ToString(id))), completed)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tmp, segDir} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("what Complete writes before installing: %v", err)
		}
	}
	if body, _ := get(ctx, t, c, "final"); !bytes.Equal(body, old) {
		t.Fatalf("before the install: %d bytes, not the old object", len(body))
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// And a PUT's temporary file, a segment directory of no object.
	name := filepath.Base(objectFile(dir, "final"))
	for _, p := range []string{"." + name + ".tmp-123", ".bm8.seg-7/1"} {
		p = filepath.Join(dir, testBucket, p)
		if err := errors.Join(os.MkdirAll(filepath.Dir(p), 0o700), os.WriteFile(p, []byte("x"), 0o600)); err != nil {
			t.Fatal(err)
		}
	}

	srv = start(t, dir)
	c = client(srv.Endpoint(), testAccess, testSecret)
	if body, _ := get(ctx, t, c, "final"); !bytes.Equal(body, old) {
		t.Errorf("after the start: %d bytes, not the old object", len(body))
	}
	left := dotEntries(t, dir)
	if len(left) != 1 || !strings.HasPrefix(left[0], "."+name+".seg-") {
		t.Errorf("left in the bucket's directory after the start: %q, want the old object's segments alone", left)
	}
	if _, links := diskUse(t, dir, objectFile(dir, chunkKey(0))); links[0] != 2 {
		t.Errorf("the chunk's file has %d links, want 2 (its own, the old object's)", links[0])
	}
}
