package pki

import "errors"

var (
	// ErrInvalidCSR is wrapped by SignCSR for a CSR it refuses: bad PEM, bad
	// signature, a key that is not RSA or is too small.
	ErrInvalidCSR = errors.New("invalid certificate signing request")
	// ErrInvalidKey is wrapped for a key that cannot be used or parsed. The
	// message never contains key material.
	ErrInvalidKey = errors.New("invalid key")
)
