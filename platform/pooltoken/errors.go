package pooltoken

import "errors"

var (
	// ErrInvalidToken is wrapped by every Parse and Encode failure; the message
	// names the field at fault.
	ErrInvalidToken = errors.New("invalid pool token")
	// ErrInvalidKey is wrapped when a pool private key cannot be used. The
	// message never contains key material.
	ErrInvalidKey = errors.New("invalid pool private key")
	// ErrKeyMismatch is wrapped when the pool private key is not the key the
	// token's certificate was issued for.
	ErrKeyMismatch = errors.New("pool private key does not match the token's certificate")
	// ErrCertificateNotValid is wrapped by CheckValidity: the certificate has
	// expired or is not valid yet.
	ErrCertificateNotValid = errors.New("pool certificate not valid now")
)
