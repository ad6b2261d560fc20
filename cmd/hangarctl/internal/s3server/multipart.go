package s3server

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rclone/gofakes3"
)

// Multipart uploads of the dir backend (gofakes3.MultipartBackend): an
// upload is a directory .mpu-<id> in its bucket's directory (never listed:
// its name is no base64url key), holding the upload's key and metadata
// (upload.json) and one file per part (part-<n>) in the object file format
// (header line, then the body). Parts stream to their file; a part copied
// from a whole object of this backend (UploadPartCopy, which gofakes3
// turns into a GetObject and an UploadPart of its body) is a hard link to
// the object's file, whose stored MD5 is the part's ETag: nothing is read
// or hashed. Complete checks the parts' ETags, order and sizes (every part
// but the last at least minPart), writes the object by copy_file_range from
// the parts' files (io.Copy between files; no pass in user space) and
// installs it as PutObject does, If-None-Match and If-Match honoured under
// the lock. Uploads are removed by Complete and Abort; those a stop left
// behind are removed at start.

const (
	uploadPrefix = ".mpu-"
	uploadMeta   = "upload.json"
	// minPart is S3's smallest part but the last.
	minPart = 5 << 20
)

var _ gofakes3.MultipartBackend = (*dirBackend)(nil)

type uploadInfo struct {
	Key      string            `json:"key"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func (b *dirBackend) uploadDir(bucket string, id gofakes3.UploadID) string {
	return filepath.Join(b.bucketDir(bucket), uploadPrefix+string(id))
}

func partName(n int) string { return "part-" + strconv.Itoa(n) }

// removeUploads removes the multipart uploads left in the buckets'
// directories (gofakes3 forgets them when it stops).
func removeUploads(dir string) error {
	dirs, err := filepath.Glob(filepath.Join(dir, "*", uploadPrefix+"*"))
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove multipart upload left behind: %w", err)
		}
	}
	return nil
}

func (b *dirBackend) CreateMultipartUpload(_ context.Context, bucket, object string, meta map[string]string) (gofakes3.UploadID, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.exists(bucket) {
		return "", gofakes3.BucketNotFound(bucket)
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	id := gofakes3.UploadID(hex.EncodeToString(raw))
	dir := b.uploadDir(bucket, id)
	info, err := json.Marshal(uploadInfo{Key: object, Metadata: meta})
	if err == nil {
		err = os.Mkdir(dir, 0o700)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, uploadMeta), info, 0o600)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("create multipart upload: %w", err)
	}
	return id, nil
}

// upload reads an upload's record; NoSuchUpload if there is none for
// object.
func (b *dirBackend) upload(bucket, object string, id gofakes3.UploadID) (uploadInfo, error) {
	var info uploadInfo
	if strings.ContainsAny(string(id), `/\.`) {
		return info, gofakes3.ErrNoSuchUpload
	}
	data, err := os.ReadFile(filepath.Join(b.uploadDir(bucket, id), uploadMeta))
	if errors.Is(err, fs.ErrNotExist) {
		return info, gofakes3.ErrNoSuchUpload
	}
	if err == nil {
		err = json.Unmarshal(data, &info)
	}
	if err != nil {
		return info, fmt.Errorf("read multipart upload: %w", err)
	}
	if info.Key != object {
		return info, gofakes3.ErrNoSuchUpload
	}
	return info, nil
}

func (b *dirBackend) UploadPart(_ context.Context, bucket, object string, id gofakes3.UploadID, partNumber int, contentLength int64, body io.Reader) (string, error) {
	if _, err := b.upload(bucket, object, id); err != nil {
		return "", err
	}
	dir := b.uploadDir(bucket, id)
	path := filepath.Join(dir, partName(partNumber))
	src, _ := body.(*objectReader)
	if src != nil && src.whole && src.size == contentLength {
		if etag, ok := linkPart(src, dir, path); ok {
			return etag, nil
		}
	}
	f, err := os.CreateTemp(dir, ".part-*")
	if err != nil {
		return "", fmt.Errorf("upload part: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	in, etag := body, []byte(nil)
	if src != nil {
		in = src.body // *io.LimitedReader of the object's *os.File: copy_file_range
		if src.whole {
			etag, _ = hex.DecodeString(src.md5)
		}
	}
	hdr, n, err := writeObject(f, objectHeader{Key: object}, in, etag)
	if err == nil && n != contentLength {
		err = fmt.Errorf("%w: part of %d bytes, expected %d", gofakes3.ErrIncompleteBody, n, contentLength)
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return "", fmt.Errorf("upload part: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("upload part: %w", err)
	}
	return `"` + hdr.MD5 + `"`, nil
}

// linkPart makes the part at path a hard link to the file of the whole
// object src reads, if it is still the file src has open (the key may have
// been written again since), and returns the part's ETag: the object's
// stored MD5.
func linkPart(src *objectReader, dir, path string) (string, bool) {
	tmp := filepath.Join(dir, ".link-"+filepath.Base(path))
	_ = os.Remove(tmp)
	if err := os.Link(src.path, tmp); err != nil {
		return "", false
	}
	opened, err1 := src.f.Stat()
	linked, err2 := os.Lstat(tmp)
	if err1 != nil || err2 != nil || !os.SameFile(opened, linked) || os.Rename(tmp, path) != nil {
		_ = os.Remove(tmp)
		return "", false
	}
	return `"` + src.md5 + `"`, true
}

func (b *dirBackend) CompleteMultipartUpload(ctx context.Context, bucket, object string, id gofakes3.UploadID, in *gofakes3.CompleteMultipartUploadRequest) (gofakes3.VersionID, string, error) {
	info, err := b.upload(bucket, object, id)
	if err != nil {
		return "", "", err
	}
	dir := b.uploadDir(bucket, id)
	f, err := os.CreateTemp(b.bucketDir(bucket), "."+filepath.Base(b.objectPath(bucket, object))+".tmp-*")
	if err != nil {
		return "", "", fmt.Errorf("complete multipart upload: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once installed
	hdr, err := assemble(f, objectHeader{Key: object, Metadata: info.Metadata}, dir, in.Parts)
	if err = errors.Join(err, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
		var gerr gofakes3.Error
		if errors.As(err, &gerr) {
			return "", "", gerr
		}
		return "", "", fmt.Errorf("complete multipart upload: %w", err)
	}
	if err := b.install(ctx, bucket, object, tmp); err != nil {
		return "", "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", "", fmt.Errorf("complete multipart upload: %w", err)
	}
	return "", `"` + hdr.MD5 + `"`, nil
}

// assemble writes to f the object made of parts (stored in dir): the
// header line, then each part's body by copy_file_range. The object's
// ETag is the MD5 of the parts' MD5s, as S3's multipart ETag (without
// S3's "-<parts>" suffix, so that it stays an MD5 in the header).
func assemble(f *os.File, hdr objectHeader, dir string, parts []gofakes3.CompletedPart) (objectHeader, error) {
	if len(parts) == 0 {
		return hdr, gofakes3.ErrorMessage(gofakes3.ErrInvalidPart, "no parts")
	}
	reserved, err := writeHeaderRoom(f, &hdr)
	if err != nil {
		return hdr, err
	}
	sums := md5.New()
	var size int64
	for i, p := range parts {
		if i > 0 && p.PartNumber <= parts[i-1].PartNumber {
			return hdr, gofakes3.ErrInvalidPartOrder
		}
		n, sum, err := appendPart(f, filepath.Join(dir, partName(p.PartNumber)), p.ETag, i == len(parts)-1)
		if err != nil {
			return hdr, err
		}
		sums.Write(sum)
		size += n
	}
	hdr.MD5, hdr.Size = hex.EncodeToString(sums.Sum(nil)), size
	return hdr, writeHeader(f, hdr, reserved)
}

// appendPart copies the body of the part file at path to f, after checking
// its ETag (etag) and, unless last, its size; it returns its size and MD5.
func appendPart(f *os.File, path, etag string, last bool) (int64, []byte, error) {
	p, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, gofakes3.ErrorMessage(gofakes3.ErrInvalidPart, "no such part")
	}
	if err != nil {
		return 0, nil, err
	}
	defer p.Close()
	at, hdr, err := readHeaderOf(p)
	if err != nil {
		return 0, nil, err
	}
	if strings.Trim(etag, `"`) != hdr.MD5 {
		return 0, nil, gofakes3.ErrorMessage(gofakes3.ErrInvalidPart, "the part's ETag differs")
	}
	if !last && hdr.Size < minPart {
		return 0, nil, gofakes3.ErrorMessage(gofakes3.ErrorCode("EntityTooSmall"), "a part but the last is smaller than 5 MiB")
	}
	if _, err := p.Seek(at, io.SeekStart); err != nil {
		return 0, nil, err
	}
	n, err := io.Copy(f, io.LimitReader(p, hdr.Size)) // copy_file_range
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("part of %d bytes, %d read", hdr.Size, n)
	}
	sum, _ := hex.DecodeString(hdr.MD5)
	return n, sum, err
}

func (b *dirBackend) AbortMultipartUpload(_ context.Context, bucket, object string, id gofakes3.UploadID) error {
	if _, err := b.upload(bucket, object, id); err != nil {
		return err
	}
	if err := os.RemoveAll(b.uploadDir(bucket, id)); err != nil {
		return fmt.Errorf("abort multipart upload: %w", err)
	}
	return nil
}
