package pooltoken

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
)

// ParsePrivateKeyB64 decodes HANGAR_POOL_PRIVATE_KEY: standard base64 (as
// `base64 -w0 pool.key` prints) of a PEM holding an unencrypted RSA key, either
// "PRIVATE KEY" (PKCS#8, what `openssl req -newkey rsa:4096 -nodes` and
// `hangarctl keygen` write) or "RSA PRIVATE KEY" (PKCS#1). Surrounding whitespace
// is ignored. Errors wrap ErrInvalidKey and never contain key material.
func ParsePrivateKeyB64(s string) (*rsa.PrivateKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		return nil, fmt.Errorf("%w: this is a PEM; the value must be its base64 on one line (base64 -w0 pool.key)", ErrInvalidKey)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		return nil, fmt.Errorf("%w: not standard base64 (use base64 -w0 pool.key)", ErrInvalidKey)
	}
	defer clear(raw)
	return ParsePrivateKeyPEM(raw)
}

// ParsePrivateKeyPEM parses an unencrypted RSA private key PEM ("PRIVATE KEY" or
// "RSA PRIVATE KEY") of at least MinRSABits. Errors wrap ErrInvalidKey and never
// contain key material.
func ParsePrivateKeyPEM(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		if bytes.Contains(b, []byte("-----BEGIN")) {
			return nil, fmt.Errorf("%w: PEM block does not decode", ErrInvalidKey)
		}
		return nil, fmt.Errorf("%w: no PEM block", ErrInvalidKey)
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted {
		return nil, fmt.Errorf("%w: the key is encrypted; use an unencrypted key (-nodes)", ErrInvalidKey)
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PRIVATE KEY block is not a valid PKCS#8 key", ErrInvalidKey)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: key is %s, want RSA", ErrInvalidKey, keyKind(k))
		}
		key = rk
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: RSA PRIVATE KEY block is not a valid PKCS#1 key", ErrInvalidKey)
		}
		key = k
	case "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("%w: the key is encrypted; use an unencrypted key (-nodes)", ErrInvalidKey)
	default:
		return nil, fmt.Errorf("%w: PEM block is %q, want PRIVATE KEY or RSA PRIVATE KEY", ErrInvalidKey, block.Type)
	}
	if bits := key.N.BitLen(); bits < MinRSABits {
		return nil, fmt.Errorf("%w: RSA key has %d bits, want at least %d", ErrInvalidKey, bits, MinRSABits)
	}
	return key, nil
}

// keyKind names a key's type without printing it.
func keyKind(k any) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", k), "*")
}
