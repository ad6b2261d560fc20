// Package handoff stores the workspace of a tracked run that stops for
// confirmation and reads it back when the confirmed run resumes, as
// hangar.work.v1.HandOff and ResumeState describe:
//
//	object  <prefix>state/<run_id>.bin in the pool's state bucket
//	content AES-256-GCM(K, N, gzip(tar(workspace)), aad)
//	aad     "hangar.state.v1\x00" || run_id || "\x00" || pool_id
//	key     K fresh per hand-off, wrapped to the pool's public key
//	        (sealedbox.WrapKey: RSA-OAEP SHA-256, label "hangar.sealedbox.v1")
//
// S3 sees only ciphertext; the executor never keeps K (it forgets it once
// the object is stored) and gets it back only from the gateway, which alone
// can unwrap it, inside the resumed run's assignment. The archive is held in
// memory while it is encrypted (AES-GCM seals in one piece): MaxBytes bounds
// it.
package handoff

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	workv1 "github.com/hangar-dev/hangar/gen/go/hangar/work/v1"
	"github.com/hangar-dev/hangar/platform/sealedbox"
	"github.com/hangar-dev/hangar/services/executor/internal/wsarchive"
)

// DefaultMaxBytes bounds a stored state (the gzipped archive) by default.
const DefaultMaxBytes = 1 << 30

// aadPrefix starts the associated data of every state object.
const aadPrefix = "hangar.state.v1\x00"

// ErrVerification is wrapped by Restore when the stored object is not the
// one handed off: wrong size or digest, or it does not decrypt.
var ErrVerification = errors.New("failed verification")

// ErrTooLarge is wrapped when a workspace archive exceeds MaxBytes.
var ErrTooLarge = errors.New("workspace archive exceeds the state size limit")

// Client is the part of the S3 client used here.
type Client interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, opts ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Store keeps hand-off states in one bucket, under one prefix.
type Store struct {
	client Client
	bucket string
	prefix string
	// MaxBytes bounds the gzipped archive (and so the object); <= 0 means
	// DefaultMaxBytes. Extraction is bounded to 8 times as much content.
	MaxBytes int64
}

// NewStore returns a Store. prefix is "" or ends with "/".
func NewStore(client Client, bucket, prefix string, maxBytes int64) *Store {
	return &Store{client: client, bucket: bucket, prefix: prefix, MaxBytes: maxBytes}
}

// Key is the object key of a run's state.
func (s *Store) Key(runID string) string { return s.prefix + "state/" + runID + ".bin" }

func (s *Store) max() int64 {
	if s.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return s.MaxBytes
}

// AAD is the associated data of a run's state object.
func AAD(runID, poolID string) []byte {
	return []byte(aadPrefix + runID + "\x00" + poolID)
}

// Pack runs export (runner.Job.AfterPhases's export: a tar archive of the
// workspace) and returns the archive gzipped, at most MaxBytes.
func (s *Store) Pack(export func(io.Writer) error) ([]byte, error) {
	buf := &limitBuffer{max: s.max()}
	zw := gzip.NewWriter(buf)
	if err := export(zw); err != nil {
		return nil, fmt.Errorf("pack workspace: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("pack workspace: %w", err)
	}
	return buf.Bytes(), nil
}

// Put encrypts a packed workspace for runID under a fresh key, stores it at
// Key(runID) and returns the HandOff to report, its key wrapped to pub.
func (s *Store) Put(ctx context.Context, runID, poolID string, pub *rsa.PublicKey, packed []byte) (*workv1.HandOff, error) {
	key := make([]byte, sealedbox.KeySize)
	defer clear(key)
	nonce := make([]byte, sealedbox.NonceSize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("store state: key: %w", err)
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("store state: nonce: %w", err)
	}
	wrapped, err := sealedbox.WrapKey(pub, key)
	if err != nil {
		return nil, fmt.Errorf("store state: %w", err)
	}
	gcm, err := newGCM(key)
	if err != nil {
		return nil, fmt.Errorf("store state: %w", err)
	}
	ct := gcm.Seal(nil, nonce, packed, AAD(runID, poolID))
	sum := sha256.Sum256(ct)
	k := s.Key(runID)
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(k), Body: bytes.NewReader(ct),
		ContentLength: aws.Int64(int64(len(ct))), ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		return nil, fmt.Errorf("store state: put s3://%s/%s: %w", s.bucket, k, err)
	}
	return &workv1.HandOff{StateKey: k, WrappedKey: wrapped, Nonce: nonce, Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(ct))}, nil
}

// Restore reads the state r names back, checks its size and digest,
// decrypts it and extracts the workspace into dir (an existing, empty
// directory), refusing entries that leave it (wsarchive.Extract). A state
// that is not the one handed off fails with an error wrapping
// ErrVerification: "stored state of run X failed verification".
func (s *Store) Restore(ctx context.Context, runID, poolID string, r *workv1.ResumeState, dir string) error {
	if r.GetSize() == 0 || int64(r.GetSize()) > s.max()+int64(aesGCMOverhead) || len(r.GetKey()) != sealedbox.KeySize || len(r.GetNonce()) != sealedbox.NonceSize {
		return verificationError(runID, "the resume state is malformed")
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(r.GetStateKey())})
	if err != nil {
		return fmt.Errorf("read stored state of run %s: get s3://%s/%s: %w", runID, s.bucket, r.GetStateKey(), err)
	}
	ct, err := io.ReadAll(io.LimitReader(out.Body, int64(r.GetSize())+1))
	out.Body.Close()
	if err != nil {
		return fmt.Errorf("read stored state of run %s: %w", runID, err)
	}
	if uint64(len(ct)) != r.GetSize() {
		return verificationError(runID, fmt.Sprintf("size %d, want %d", len(ct), r.GetSize()))
	}
	sum := sha256.Sum256(ct)
	if hex.EncodeToString(sum[:]) != r.GetSha256() {
		return verificationError(runID, "SHA-256 differs")
	}
	gcm, err := newGCM(r.GetKey())
	if err != nil {
		return verificationError(runID, "bad key")
	}
	packed, err := gcm.Open(ct[:0], r.GetNonce(), ct, AAD(runID, poolID))
	if err != nil {
		return verificationError(runID, "authentication failed")
	}
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		return fmt.Errorf("restore state of run %s: %w", runID, err)
	}
	if err := wsarchive.Extract(zr, dir, 8*s.max()); err != nil {
		return fmt.Errorf("restore state of run %s: %w", runID, err)
	}
	return nil
}

// Delete removes a state object (after the resumed run used it).
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("delete s3://%s/%s: %w", s.bucket, key, err)
	}
	return nil
}

func verificationError(runID, detail string) error {
	return fmt.Errorf("stored state of run %s %w (%s)", runID, ErrVerification, detail)
}

const aesGCMOverhead = 16

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return gcm, nil
}

// limitBuffer is a bytes.Buffer refusing to grow past max.
type limitBuffer struct {
	bytes.Buffer
	max int64
}

func (b *limitBuffer) Write(p []byte) (int, error) {
	if int64(b.Len()+len(p)) > b.max {
		return 0, fmt.Errorf("%w (%d bytes)", ErrTooLarge, b.max)
	}
	return b.Buffer.Write(p)
}
