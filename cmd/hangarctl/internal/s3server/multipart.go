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
	"time"

	"github.com/rclone/gofakes3"

	"github.com/hangar-dev/hangar/platform/atomicfile"
)

// Multipart uploads of the dir backend (gofakes3.MultipartBackend): an
// upload is a directory .mpu-<id> in its bucket's directory (never listed:
// its name is no base64url key), holding the upload's key and metadata
// (upload.json) and one file per part (part-<n>) in the object file format
// (header line, then the body). Parts stream to their file, which is
// fsynced; a part copied from a whole object of this backend stored in one
// file (UploadPartCopy, which gofakes3 turns into a GetObject and an
// UploadPart of its body) is a hard link to the object's file, whose stored
// MD5 is the part's ETag: nothing is read, hashed or written.
//
// Complete copies no body either: it makes a segment directory beside the
// object's file, hard-links there the parts named (no byte written),
// checks their ETags, order and sizes (every part but the last at least
// minPart), fsyncs the directory, and installs as the object's file a
// header line listing them (a segmented object, see dirBackend) as
// PutObject installs a file: one rename under the lock, If-None-Match and
// If-Match honoured there. It is O(parts): a few ms whatever the size.
// Since the segments are hard links, removing the objects a part was
// copied from (logship removes its live chunks) leaves them whole, and
// since no object file is ever written in place once installed, a later
// write of those keys cannot change them. A stop before the rename leaves
// the object as it was, and a segment directory and a temporary file no
// object names, removed at start with the uploads left behind (gofakes3
// forgets them when it stops); Complete and Abort remove their upload.
//
// The object's ETag is the MD5 of the parts' MD5s, as S3's multipart ETag
// but without S3's "-<parts>" suffix, so that it stays an MD5 in the header
// (gofakes3 makes an object's ETag from its 16-byte hash).

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

// cleanLeftovers removes, from the buckets' directories under dir, what a
// stop left behind: multipart uploads, temporary files, and segment
// directories that are not their object's (a Complete stopped before its
// rename, a delete or overwrite stopped before removing the old ones).
func cleanLeftovers(dir string) error {
	buckets, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	for _, bucket := range buckets {
		if !bucket.IsDir() {
			continue
		}
		bdir := filepath.Join(dir, bucket.Name())
		entries, err := os.ReadDir(bdir)
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		for _, e := range entries {
			if leftover(bdir, e.Name()) {
				if err := os.RemoveAll(filepath.Join(bdir, e.Name())); err != nil {
					return fmt.Errorf("remove what a stop left behind: %w", err)
				}
			}
		}
	}
	return nil
}

// leftover tells whether name in the bucket directory bdir is what a stop
// left behind: an upload, a temporary file, or a segment directory its
// object's file (.<object>.seg-<n>) does not name.
func leftover(bdir, name string) bool {
	if strings.HasPrefix(name, uploadPrefix) {
		return true
	}
	object, suffix, ok := strings.Cut(strings.TrimPrefix(name, "."), ".")
	if !strings.HasPrefix(name, ".") || !ok {
		return false
	}
	switch {
	case strings.HasPrefix(suffix, "tmp-"):
		return true
	case strings.HasPrefix(suffix, "seg-"):
		f, err := os.Open(filepath.Join(bdir, object))
		if err != nil {
			return errors.Is(err, fs.ErrNotExist)
		}
		defer f.Close()
		_, hdr, err := readHeaderOf(f)
		return err == nil && hdr.SegDir != name
	}
	return false
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
	if src != nil && src.whole && src.path != "" && src.size == contentLength {
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
	var etag []byte
	if src != nil && src.whole {
		etag, _ = hex.DecodeString(src.md5)
	}
	// From an objectReader, io.Copy is its WriteTo: copy_file_range.
	hdr, n, err := writeObject(f, objectHeader{Key: object}, body, etag)
	if err == nil && n != contentLength {
		err = fmt.Errorf("%w: part of %d bytes, expected %d", gofakes3.ErrIncompleteBody, n, contentLength)
	}
	// Synced: Complete makes it a segment of the object as it is.
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return "", s3Error("upload part", err)
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
	opened, err1 := src.files[0].Stat()
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
	tmp, segDir, hdr, err := b.assemble(object, info.Metadata, b.objectPath(bucket, object), b.uploadDir(bucket, id), in.Parts)
	if err != nil {
		return "", "", s3Error("complete multipart upload", err)
	}
	if err := b.install(ctx, bucket, object, tmp); err != nil {
		_ = os.Remove(tmp)
		_ = os.RemoveAll(segDir)
		return "", "", err
	}
	if err := os.RemoveAll(b.uploadDir(bucket, id)); err != nil {
		return "", "", fmt.Errorf("complete multipart upload: %w", err)
	}
	return "", `"` + hdr.MD5 + `"`, nil
}

// assemble prepares the segmented object made of parts (stored in dir) to
// be installed at path: a new segment directory beside path holding hard
// links to the parts' files, named by part number, and a temporary file
// holding its header (key and metadata as given), both synced. It returns
// the temporary file, the segment directory and the header; on error it
// leaves neither.
func (b *dirBackend) assemble(key string, meta map[string]string, path, dir string, parts []gofakes3.CompletedPart) (tmp, segDir string, hdr objectHeader, err error) {
	if len(parts) == 0 {
		return "", "", hdr, gofakes3.ErrorMessage(gofakes3.ErrInvalidPart, "no parts")
	}
	bdir, name := filepath.Dir(path), filepath.Base(path)
	made, err := os.MkdirTemp(bdir, segDirPrefix(name)+"*")
	if err != nil {
		return "", "", hdr, err
	}
	var written string // the temporary file once created
	defer func() {
		if err != nil {
			_ = os.RemoveAll(made)
			if written != "" {
				_ = os.Remove(written)
			}
		}
	}()
	segDir = made
	hdr = objectHeader{Key: key, Metadata: meta, SegDir: filepath.Base(segDir), Segments: make([]segment, 0, len(parts))}
	sums := md5.New()
	for i, p := range parts {
		if i > 0 && p.PartNumber <= parts[i-1].PartNumber {
			return "", "", hdr, gofakes3.ErrInvalidPartOrder
		}
		seg, sum, err := linkSegment(filepath.Join(dir, partName(p.PartNumber)), segDir, p, i == len(parts)-1)
		if err != nil {
			return "", "", hdr, err
		}
		sums.Write(sum)
		hdr.Segments = append(hdr.Segments, seg)
		hdr.Size += seg.Size
	}
	if err := atomicfile.SyncDir(segDir); err != nil {
		return "", "", hdr, err
	}
	hdr.MD5, hdr.Modified = hex.EncodeToString(sums.Sum(nil)), time.Now().UTC()
	line, err := json.Marshal(hdr)
	if err != nil {
		return "", "", hdr, err
	}
	f, err := os.CreateTemp(bdir, tmpPrefix(name)+"*")
	if err != nil {
		return "", "", hdr, err
	}
	written = f.Name()
	_, err = f.Write(append(line, '\n'))
	if err = errors.Join(err, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
		return "", "", hdr, err
	}
	// The segment directory's entry is durable before the header naming it
	// can be installed.
	if err := atomicfile.SyncDir(bdir); err != nil {
		return "", "", hdr, err
	}
	return written, segDir, hdr, nil
}

// linkSegment hard-links the part file at path into segDir, named by its
// part number, then checks there (the upload's part may be replaced
// meanwhile, the link not) its ETag and, unless last, its size; it returns
// the segment and the part's MD5.
func linkSegment(path, segDir string, p gofakes3.CompletedPart, last bool) (segment, []byte, error) {
	seg := segment{File: strconv.Itoa(p.PartNumber)}
	link := filepath.Join(segDir, seg.File)
	if err := os.Link(path, link); errors.Is(err, fs.ErrNotExist) {
		return seg, nil, gofakes3.ErrorMessage(gofakes3.ErrInvalidPart, "no such part")
	} else if err != nil {
		return seg, nil, err
	}
	f, err := os.Open(link)
	if err != nil {
		return seg, nil, err
	}
	defer f.Close()
	at, hdr, err := readHeaderOf(f)
	if err != nil {
		return seg, nil, err
	}
	if strings.Trim(p.ETag, `"`) != hdr.MD5 {
		return seg, nil, gofakes3.ErrorMessage(gofakes3.ErrInvalidPart, "the part's ETag differs")
	}
	if !last && hdr.Size < minPart {
		return seg, nil, gofakes3.ErrorMessage(gofakes3.ErrorCode("EntityTooSmall"), "a part but the last is smaller than 5 MiB")
	}
	if st, err := f.Stat(); err != nil || st.Size() < at+hdr.Size {
		return seg, nil, fmt.Errorf("part file shorter than its header says: %v", err)
	}
	seg.At, seg.Size = at, hdr.Size
	sum, _ := hex.DecodeString(hdr.MD5)
	return seg, sum, nil
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
