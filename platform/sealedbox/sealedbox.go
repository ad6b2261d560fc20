// Package sealedbox implements Hangar's hybrid public-key encryption to an RSA
// key, exactly as hangar.run.v1.SealedBox documents it:
//
//	a fresh 32-byte AES-256 key K and 12-byte nonce N;
//	ciphertext  = AES-256-GCM(K, N, plaintext, aad)
//	wrapped_key = RSA-OAEP(SHA-256, label "hangar.sealedbox.v1", K)
//
// The associated data is not stored in the box: the caller passes the same
// bytes to Seal and Open, which binds the ciphertext to its context.
package sealedbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

const (
	// KeySize is the size of the AES-256 content key.
	KeySize = 32
	// NonceSize is the size of the AES-GCM nonce.
	NonceSize = 12
	// MinRSABits is the smallest RSA modulus Seal and Open accept.
	MinRSABits = 2048
)

// oaepLabel is the RSA-OAEP label that separates sealed-box key wrapping from any
// other use of the same RSA key.
var oaepLabel = []byte("hangar.sealedbox.v1")

// Seal encrypts plaintext to pub, binding aad. It uses a fresh key and nonce on
// every call.
func Seal(pub *rsa.PublicKey, plaintext, aad []byte) (*runv1.SealedBox, error) {
	if err := checkPublic(pub); err != nil {
		return nil, fmt.Errorf("sealedbox: seal: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("sealedbox: seal: content key: %w", err)
	}
	defer clear(key)
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("sealedbox: seal: nonce: %w", err)
	}
	gcm, err := newGCM(key)
	if err != nil {
		return nil, fmt.Errorf("sealedbox: seal: %w", err)
	}
	wrapped, err := wrapKey(pub, key)
	if err != nil {
		return nil, fmt.Errorf("sealedbox: seal: wrap key: %w", err)
	}
	return &runv1.SealedBox{
		WrappedKey: wrapped,
		Nonce:      nonce,
		Ciphertext: gcm.Seal(nil, nonce, plaintext, aad),
	}, nil
}

// Open decrypts box with priv and checks aad. Every failure wraps ErrDecrypt and
// none says which part of the box was wrong.
func Open(priv *rsa.PrivateKey, box *runv1.SealedBox, aad []byte) ([]byte, error) {
	if priv == nil {
		return nil, fmt.Errorf("sealedbox: open: %w: no private key", ErrInvalidKey)
	}
	if err := checkPublic(&priv.PublicKey); err != nil {
		return nil, fmt.Errorf("sealedbox: open: %w", err)
	}
	if box == nil {
		return nil, fmt.Errorf("%w: no box", ErrDecrypt)
	}
	if n := len(box.GetNonce()); n != NonceSize {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", ErrDecrypt, n, NonceSize)
	}
	if n := len(box.GetWrappedKey()); n != priv.Size() {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d for this key", ErrDecrypt, n, priv.Size())
	}
	if len(box.GetCiphertext()) < aesGCMTagSize {
		return nil, fmt.Errorf("%w: ciphertext shorter than its tag", ErrDecrypt)
	}
	key, err := rsa.DecryptOAEP(sha256.New(), nil, priv, box.GetWrappedKey(), oaepLabel)
	if err != nil || len(key) != KeySize {
		// Same message as a failed AES-GCM open below: no oracle on which step failed.
		clear(key)
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	defer clear(key)
	gcm, err := newGCM(key)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	plaintext, err := gcm.Open(nil, box.GetNonce(), box.GetCiphertext(), aad)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	return plaintext, nil
}

// WrapKey wraps a fresh AES-256 content key to pub exactly as Seal does
// (RSA-OAEP, SHA-256, label "hangar.sealedbox.v1"), for callers that encrypt
// their content themselves (hangar.work.v1.HandOff). key must be KeySize bytes.
func WrapKey(pub *rsa.PublicKey, key []byte) ([]byte, error) {
	if err := checkPublic(pub); err != nil {
		return nil, fmt.Errorf("sealedbox: wrap key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealedbox: wrap key: %w: content key is %d bytes, want %d", ErrInvalidKey, len(key), KeySize)
	}
	wrapped, err := wrapKey(pub, key)
	if err != nil {
		return nil, fmt.Errorf("sealedbox: wrap key: %w", err)
	}
	return wrapped, nil
}

// UnwrapKey returns the content key that WrapKey (or Seal) wrapped to priv's
// public key. Every failure wraps ErrDecrypt and does not say why.
func UnwrapKey(priv *rsa.PrivateKey, wrapped []byte) ([]byte, error) {
	if priv == nil {
		return nil, fmt.Errorf("sealedbox: unwrap key: %w: no private key", ErrInvalidKey)
	}
	if err := checkPublic(&priv.PublicKey); err != nil {
		return nil, fmt.Errorf("sealedbox: unwrap key: %w", err)
	}
	if len(wrapped) != priv.Size() {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d for this key", ErrDecrypt, len(wrapped), priv.Size())
	}
	key, err := rsa.DecryptOAEP(sha256.New(), nil, priv, wrapped, oaepLabel)
	if err != nil || len(key) != KeySize {
		clear(key)
		return nil, fmt.Errorf("%w: authentication failed", ErrDecrypt)
	}
	return key, nil
}

// ParsePublicKey parses an RSA public key in PKIX DER (as
// hangar.work.v1.Assign.pool_public_key carries it) and checks its size.
func ParsePublicKey(der []byte) (*rsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("sealedbox: parse public key: %w: %w", ErrInvalidKey, err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("sealedbox: parse public key: %w: %T is not an RSA key", ErrInvalidKey, k)
	}
	if err := checkPublic(pub); err != nil {
		return nil, fmt.Errorf("sealedbox: parse public key: %w", err)
	}
	return pub, nil
}

func wrapKey(pub *rsa.PublicKey, key []byte) ([]byte, error) {
	return rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, key, oaepLabel)
}

// PublicKeyFingerprint returns the lowercase hex SHA-256 of pub's PKIX DER
// encoding (what `openssl pkey -pubin -outform DER | sha256sum` prints), or ""
// for a nil key.
func PublicKeyFingerprint(pub *rsa.PublicKey) string {
	if pub == nil {
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

const aesGCMTagSize = 16

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

func checkPublic(pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil {
		return fmt.Errorf("%w: no public key", ErrInvalidKey)
	}
	if bits := pub.N.BitLen(); bits < MinRSABits {
		return fmt.Errorf("%w: RSA key has %d bits, want at least %d", ErrInvalidKey, bits, MinRSABits)
	}
	return nil
}
