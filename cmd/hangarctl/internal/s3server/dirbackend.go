package s3server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rclone/gofakes3"

	"github.com/hangar-dev/hangar/platform/atomicfile"
)

// dirBackend is a gofakes3.Backend keeping each bucket in a directory and
// each object in one file: a line of JSON (key, metadata, MD5, time)
// followed by the body. Files are written to a temporary name and renamed,
// so an object is replaced atomically. File names are the base64url of the
// keys, which keeps any key a valid name and lets listing recover the keys.
//
// An object completed from a multipart upload is segmented instead: its
// file holds the header line alone, naming a directory beside it
// (.<name>.seg-<n>, never listed: '.' is not base64url) that holds the
// upload's part files (hard links, in the object file format) and listing
// their bodies in order (multipart.go). Reads go across them; a delete or
// an overwrite removes that directory after the object's file. Since a
// temporary file or a directory a stop left behind is not any object's,
// they are removed at start (cleanLeftovers).
type dirBackend struct {
	dir string
	mu  sync.RWMutex
}

// objectHeader is the first line of an object file.
type objectHeader struct {
	Key      string            `json:"key"`
	Metadata map[string]string `json:"metadata,omitempty"`
	MD5      string            `json:"md5"`
	Size     int64             `json:"size"`
	Modified time.Time         `json:"modified"`
	// SegDir and Segments are those of a segmented object (see
	// dirBackend): the directory in the bucket's directory holding its
	// segments, and the segments in order, their sizes adding up to Size.
	SegDir   string    `json:"segdir,omitempty"`
	Segments []segment `json:"segments,omitempty"`
}

// segment is a part of a segmented object's body: Size bytes at At in the
// file File of the object's SegDir.
type segment struct {
	File string `json:"file"`
	At   int64  `json:"at"`
	Size int64  `json:"size"`
}

// segDirPrefix is how the names of the segment directories of the object
// stored in the file name begin.
func segDirPrefix(name string) string { return "." + name + ".seg-" }

// tmpPrefix is how the names of the temporary files of the object stored
// in the file name begin.
func tmpPrefix(name string) string { return "." + name + ".tmp-" }

// segDir returns the path of the segment directory of the object stored
// in the file at path, or "" if it has none; an error if the header names
// a directory that is not one of that object's.
func (hdr objectHeader) segDir(path string) (string, error) {
	if hdr.SegDir == "" && len(hdr.Segments) == 0 {
		return "", nil
	}
	if !strings.HasPrefix(hdr.SegDir, segDirPrefix(filepath.Base(path))) || strings.ContainsAny(hdr.SegDir, `/\`) {
		return "", fmt.Errorf("object header names segment directory %q", hdr.SegDir)
	}
	return filepath.Join(filepath.Dir(path), hdr.SegDir), nil
}

var _ gofakes3.Backend = (*dirBackend)(nil)

func newDirBackend(dir string) (*dirBackend, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := cleanLeftovers(dir); err != nil {
		return nil, err
	}
	return &dirBackend{dir: dir}, nil
}

func (b *dirBackend) bucketDir(name string) string { return filepath.Join(b.dir, name) }

func (b *dirBackend) objectPath(bucket, key string) string {
	return filepath.Join(b.bucketDir(bucket), base64.RawURLEncoding.EncodeToString([]byte(key)))
}

func (b *dirBackend) exists(bucket string) bool {
	st, err := os.Stat(b.bucketDir(bucket))
	return err == nil && st.IsDir()
}

func (b *dirBackend) ListBuckets(context.Context) ([]gofakes3.BucketInfo, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	var out []gofakes3.BucketInfo
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, gofakes3.BucketInfo{Name: e.Name(), CreationDate: gofakes3.NewContentTime(info.ModTime())})
	}
	return out, nil
}

func (b *dirBackend) ListBucket(_ context.Context, name string, prefix *gofakes3.Prefix, page gofakes3.ListBucketPage) (*gofakes3.ObjectList, error) {
	if prefix == nil {
		prefix = &gofakes3.Prefix{}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.exists(name) {
		return nil, gofakes3.BucketNotFound(name)
	}
	entries, err := os.ReadDir(b.bucketDir(name))
	if err != nil {
		return nil, fmt.Errorf("list bucket: %w", err)
	}
	var keys []string
	for _, e := range entries {
		k, err := base64.RawURLEncoding.DecodeString(e.Name())
		if err != nil || e.IsDir() {
			continue // temporary files and strays
		}
		keys = append(keys, string(k))
	}
	slices.Sort(keys)

	list := gofakes3.NewObjectList()
	var match gofakes3.PrefixMatch
	var lastPrefix string
	var count int64
	for i, key := range keys {
		if page.Marker != "" && key <= page.Marker {
			continue
		}
		if !prefix.Match(key, &match) {
			continue
		}
		if match.CommonPrefix {
			if match.MatchedPart == lastPrefix {
				continue
			}
			list.AddPrefix(match.MatchedPart)
			lastPrefix = match.MatchedPart
		} else {
			hdr, err := b.readHeader(name, key)
			if err != nil {
				continue // removed meanwhile
			}
			list.Add(&gofakes3.Content{
				Key:          key,
				LastModified: gofakes3.NewContentTime(hdr.Modified),
				ETag:         `"` + hdr.MD5 + `"`,
				Size:         hdr.Size,
			})
		}
		count++
		if page.MaxKeys > 0 && count >= page.MaxKeys {
			list.NextMarker = key
			list.IsTruncated = i < len(keys)-1
			break
		}
	}
	return list, nil
}

func (b *dirBackend) CreateBucket(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.exists(name) {
		return gofakes3.ResourceError(gofakes3.ErrBucketAlreadyExists, name)
	}
	if err := os.Mkdir(b.bucketDir(name), 0o750); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	return nil
}

func (b *dirBackend) BucketExists(_ context.Context, name string) (bool, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.exists(name), nil
}

func (b *dirBackend) DeleteBucket(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.exists(name) {
		return gofakes3.ErrNoSuchBucket
	}
	entries, err := os.ReadDir(b.bucketDir(name))
	if err != nil {
		return fmt.Errorf("delete bucket: %w", err)
	}
	if len(entries) > 0 {
		return gofakes3.ResourceError(gofakes3.ErrBucketNotEmpty, name)
	}
	if err := os.Remove(b.bucketDir(name)); err != nil {
		return fmt.Errorf("delete bucket: %w", err)
	}
	return nil
}

// open opens an object file and reads its header; it returns the offset
// of the body in the file.
func (b *dirBackend) open(bucket, key string) (*os.File, int64, objectHeader, error) {
	var hdr objectHeader
	if !b.exists(bucket) {
		return nil, 0, hdr, gofakes3.BucketNotFound(bucket)
	}
	f, err := os.Open(b.objectPath(bucket, key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, hdr, gofakes3.KeyNotFound(key)
	}
	if err != nil {
		return nil, 0, hdr, fmt.Errorf("open object: %w", err)
	}
	at, hdr, err := readHeaderOf(f)
	if err != nil {
		f.Close()
		return nil, 0, hdr, err
	}
	return f, at, hdr, nil
}

// readHeaderOf reads the header line of an object file; it returns the
// offset of the body.
func readHeaderOf(f *os.File) (int64, objectHeader, error) {
	var hdr objectHeader
	line, err := bufio.NewReader(f).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &hdr)
	}
	if err != nil {
		return 0, hdr, fmt.Errorf("read object header: %w", err)
	}
	return int64(len(line)), hdr, nil
}

func (b *dirBackend) readHeader(bucket, key string) (objectHeader, error) {
	f, _, hdr, err := b.open(bucket, key)
	if err != nil {
		return hdr, err
	}
	f.Close()
	return hdr, nil
}

// objectReader is the body of an object read from its file, or from its
// segments' files: pieces of open files, read in order. It says whether it
// is the whole object and, for an object of one file, which file, so that
// an UploadPartCopy of it (gofakes3 hands the body of a GetObject to
// UploadPart) is a hard link; its WriteTo copies each piece by
// io.Copy(w, *io.LimitedReader of an *os.File), so that the kernel copies
// (copy_file_range to a file, sendfile to a socket) where it can.
type objectReader struct {
	pieces []*io.LimitedReader // of files
	files  []*os.File
	path   string // the object's file if it is not segmented
	whole  bool
	size   int64
	md5    string
}

func (r *objectReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(r.pieces) > 0 {
		n, err := r.pieces[0].Read(p)
		if err == io.EOF {
			if r.pieces[0].N > 0 {
				return n, fmt.Errorf("read object: %w", io.ErrUnexpectedEOF)
			}
			r.pieces = r.pieces[1:]
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.EOF
}

func (r *objectReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for len(r.pieces) > 0 {
		n, err := io.Copy(w, r.pieces[0])
		total += n
		if err != nil {
			return total, err
		}
		if r.pieces[0].N > 0 {
			return total, fmt.Errorf("read object: %w", io.ErrUnexpectedEOF)
		}
		r.pieces = r.pieces[1:]
	}
	return total, nil
}

func (r *objectReader) Close() error {
	var errs []error
	for _, f := range r.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

func (b *dirBackend) object(bucket, key string, rng *gofakes3.ObjectRangeRequest, withBody bool) (*gofakes3.Object, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	f, at, hdr, err := b.open(bucket, key)
	if err != nil {
		return nil, err
	}
	sum, _ := hex.DecodeString(hdr.MD5)
	obj := &gofakes3.Object{Name: key, Metadata: hdr.Metadata, Size: hdr.Size, Hash: sum}
	if !withBody {
		f.Close()
		obj.Contents = io.NopCloser(strings.NewReader(""))
		return obj, nil
	}
	rnge, err := rng.Range(hdr.Size)
	if err != nil {
		f.Close()
		return nil, err
	}
	var start, length int64 = 0, hdr.Size
	if rnge != nil {
		start, length = rnge.Start, rnge.Length
	}
	r := &objectReader{whole: length == hdr.Size, size: length, md5: hdr.MD5}
	path := b.objectPath(bucket, key)
	segDir, err := hdr.segDir(path)
	if err == nil && segDir == "" {
		r.path, r.files = path, []*os.File{f}
		r.pieces = []*io.LimitedReader{{R: f, N: length}}
		_, err = f.Seek(at+start, io.SeekStart)
	} else {
		f.Close()
		if err == nil {
			// Under the lock: a delete or an overwrite removes the
			// segments only once no reader is opening them.
			err = r.openSegments(segDir, hdr.Segments, start, length)
		}
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("read object: %w", err)
	}
	obj.Range = rnge
	obj.Contents = r
	return obj, nil
}

// openSegments opens the files of the segments (in dir) that hold bytes
// start to start+length of the object, as r's pieces.
func (r *objectReader) openSegments(dir string, segs []segment, start, length int64) error {
	end := start + length
	var pos int64
	for _, s := range segs {
		from, to := max(start, pos), min(end, pos+s.Size)
		if from < to {
			f, err := os.Open(filepath.Join(dir, filepath.Base(s.File)))
			if err != nil {
				return err
			}
			r.files = append(r.files, f)
			if _, err := f.Seek(s.At+from-pos, io.SeekStart); err != nil {
				return err
			}
			r.pieces = append(r.pieces, &io.LimitedReader{R: f, N: to - from})
		}
		pos += s.Size
	}
	if pos < end {
		return fmt.Errorf("segments of %d bytes, %d wanted", pos, end)
	}
	return nil
}

func (b *dirBackend) GetObject(_ context.Context, bucket, key string, rng *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
	return b.object(bucket, key, rng, true)
}

func (b *dirBackend) HeadObject(_ context.Context, bucket, key string) (*gofakes3.Object, error) {
	return b.object(bucket, key, nil, false)
}

func (b *dirBackend) DeleteObject(_ context.Context, bucket, key string) (gofakes3.ObjectDeleteResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return gofakes3.ObjectDeleteResult{}, b.remove(bucket, key)
}

// remove removes an object: its file, then its segments if it has any (a
// directory a stop leaves between the two is removed at start). The lock
// is held.
func (b *dirBackend) remove(bucket, key string) error {
	if !b.exists(bucket) {
		return gofakes3.BucketNotFound(bucket)
	}
	path := b.objectPath(bucket, key)
	hdr, _ := b.readHeader(bucket, key) // none, or unreadable: no segments to remove
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete object: %w", err)
	}
	if dir, err := hdr.segDir(path); err == nil && dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("delete object: %w", err)
		}
	}
	return nil
}

// PutObject streams the body into a temporary file in the bucket's
// directory (never the whole object in memory: logship's final logs are
// as large as a run's output), fsyncs it, and renames it into place under
// the lock, where conditional writes are checked. The header line is
// written first with room to spare and rewritten in place once the body's
// size and ETag are known (JSON allows the spaces that pad it).
//
// The body is read from the request itself, past gofakes3's readers, and
// checked against the Content-MD5 and checksum headers here (rawput.go,
// ADR 0025). The ETag is the body's MD5 when the client sent a Content-MD5
// (it is computed to check it anyway), else 16 random bytes: S3 does not
// promise that an ETag is the MD5 of the body (multipart and KMS-encrypted
// objects), and nothing here relies on it; it changes with every write,
// which If-Match needs.
func (b *dirBackend) PutObject(ctx context.Context, bucket, key string, meta map[string]string, input io.Reader, size int64) (gofakes3.PutObjectResult, error) {
	if raw := takeRawPut(ctx, size); raw != nil {
		body, err := raw.reader()
		if err != nil {
			return gofakes3.PutObjectResult{}, err
		}
		input = body
	}
	return b.put(ctx, bucket, key, meta, input, size, nil)
}

// put is PutObject, the ETag given by etag if not nil (see writeObject).
func (b *dirBackend) put(ctx context.Context, bucket, key string, meta map[string]string, input io.Reader, size int64, etag []byte) (gofakes3.PutObjectResult, error) {
	b.mu.RLock()
	ok := b.exists(bucket)
	b.mu.RUnlock()
	if !ok {
		return gofakes3.PutObjectResult{}, gofakes3.BucketNotFound(bucket)
	}
	path := b.objectPath(bucket, key)
	f, err := os.CreateTemp(filepath.Dir(path), tmpPrefix(filepath.Base(path))+"*")
	if err != nil {
		return gofakes3.PutObjectResult{}, fmt.Errorf("put object: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	hdr, n, err := writeObject(f, objectHeader{Key: key, Metadata: meta}, input, etag)
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("body of %d bytes, expected %d", n, size)
	}
	if err = errors.Join(err, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
		return gofakes3.PutObjectResult{}, s3Error("put object", err)
	}
	if err := b.install(ctx, bucket, key, tmp); err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	return gofakes3.PutObjectResult{ETag: `"` + hdr.MD5 + `"`}, nil
}

// s3Error returns the S3 error in err (a BadDigest of the body, ...) as
// it is, for gofakes3 to answer with its code (a wrapped one is an
// InternalError), else err wrapped as what failed.
func s3Error(what string, err error) error {
	var gerr gofakes3.Error
	if errors.As(err, &gerr) {
		return gerr
	}
	return fmt.Errorf("%s: %w", what, err)
}

// install renames the object file tmp (written and synced, its segments
// too if it has any) into place as key, under the lock, where the write
// conditions of ctx are checked: If-None-Match / If-Match, checked again
// under the lock so that two conditional writes cannot both succeed
// (gofakes3 checks before calling the backend, without it). The segments
// of the object replaced, if it had any, are removed once the rename is
// durable (if that fails or a stop comes first, they are left to the
// removal at start).
func (b *dirBackend) install(ctx context.Context, bucket, key, tmp string) error {
	path := b.objectPath(bucket, key)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.exists(bucket) {
		return gofakes3.BucketNotFound(bucket)
	}
	old, herr := b.readHeader(bucket, key)
	exists := herr == nil
	if gofakes3.HasWriteConditions(ctx) {
		if herr != nil && !errors.Is(herr, fs.ErrNotExist) && !gofakes3.HasErrorCode(herr, gofakes3.ErrNoSuchKey) {
			return fmt.Errorf("put object: %w", herr)
		}
		if err := gofakes3.CheckWriteConditions(ctx, exists, old.MD5); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("put object: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("put object: %w", err)
	}
	if dir, err := old.segDir(path); exists && err == nil && dir != "" {
		_ = os.RemoveAll(dir)
	}
	return nil
}

// headerRoom is what the header line reserves beyond its size with a
// placeholder ETag, the largest size and a time: enough for any time's
// length.
const headerRoom = 64

// writeObject writes an object file to f: the header line (hdr with its
// MD5, Size and Modified set here), then the body read from input. The
// MD5 is etag if given, else the body's MD5 if input has it (Sum: a body
// checked against a Content-MD5), else random (see PutObject). It returns
// the header written and the body's size.
func writeObject(f *os.File, hdr objectHeader, input io.Reader, etag []byte) (objectHeader, int64, error) {
	reserved, err := writeHeaderRoom(f, &hdr)
	if err != nil {
		return hdr, 0, err
	}
	var n int64
	if _, ok := input.(io.WriterTo); ok {
		n, err = io.Copy(f, input) // an objectReader: copy_file_range
	} else {
		buf := copyBufs.Get().(*[]byte)
		n, err = io.CopyBuffer(fileWriter{f}, input, *buf)
		copyBufs.Put(buf)
	}
	if err != nil {
		return hdr, n, err
	}
	// A body checked against a Content-MD5, or gofakes3's MD5-hashing
	// reader (the in-memory backend's bodies, and UploadPart's with a
	// Content-MD5), has the body's MD5.
	if h, ok := input.(interface{ Sum([]byte) []byte }); ok && etag == nil {
		if sum := h.Sum(nil); len(sum) == md5.Size {
			etag = sum
		}
	}
	if etag == nil {
		etag = make([]byte, md5.Size)
		_, _ = rand.Read(etag)
	}
	hdr.MD5, hdr.Size = hex.EncodeToString(etag), n
	return hdr, n, writeHeader(f, hdr, reserved)
}

// copyBufs are the buffers bodies are copied to their file through: 256
// KiB, so that a 16 MiB body is 64 writes (and reads from the socket of up
// to as much) rather than 512 of io.Copy's 32 KiB, a fifth less CPU per
// byte PUT (BenchmarkPutChunk, bench/README.md; 1 MiB did no better).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// fileWriter is an *os.File without its ReadFrom, which would copy
// through a buffer of its own.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// writeHeaderRoom writes the room for hdr's header line at the start of f
// (its MD5, Size and Modified not known yet) and returns its size.
func writeHeaderRoom(f *os.File, hdr *objectHeader) (int, error) {
	hdr.MD5, hdr.Size, hdr.Modified = strings.Repeat("0", 2*md5.Size), math.MaxInt64, time.Now().UTC()
	first, err := json.Marshal(hdr)
	if err != nil {
		return 0, err
	}
	reserved := len(first) + headerRoom
	_, err = f.Write(append(bytes.Repeat([]byte{' '}, reserved), '\n'))
	return reserved, err
}

// writeHeader writes hdr's line, padded to reserved bytes, at the start
// of f, its time set now.
func writeHeader(f *os.File, hdr objectHeader, reserved int) error {
	hdr.Modified = time.Now().UTC()
	line, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	if len(line) > reserved {
		return fmt.Errorf("object header of %d bytes, %d reserved", len(line), reserved)
	}
	line = append(line, bytes.Repeat([]byte{' '}, reserved-len(line))...)
	_, err = f.WriteAt(line, 0)
	return err
}

func (b *dirBackend) DeleteMulti(_ context.Context, bucket string, keys ...string) (gofakes3.MultiDeleteResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var res gofakes3.MultiDeleteResult
	if !b.exists(bucket) {
		return res, gofakes3.BucketNotFound(bucket)
	}
	for _, key := range keys {
		if err := b.remove(bucket, key); err != nil {
			res.Error = append(res.Error, gofakes3.ErrorResultFromError(err))
			continue
		}
		res.Deleted = append(res.Deleted, gofakes3.ObjectID{Key: key})
	}
	return res, nil
}

func (b *dirBackend) CopyObject(ctx context.Context, srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
	src, err := b.GetObject(ctx, srcBucket, srcKey, nil)
	if err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	defer src.Contents.Close()
	if _, err := b.put(ctx, dstBucket, dstKey, meta, src.Contents, src.Size, src.Hash); err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	return gofakes3.CopyObjectResult{ETag: `"` + hex.EncodeToString(src.Hash) + `"`, LastModified: gofakes3.NewContentTime(time.Now())}, nil
}
