package sealedbox

import "errors"

// ErrDecrypt is returned (wrapped) by Open for every failure to open a box: a
// wrong key, a tampered wrapped key, nonce or ciphertext, different associated
// data, or a box of the wrong shape. It deliberately does not say which.
var ErrDecrypt = errors.New("sealedbox: cannot decrypt")

// ErrInvalidKey is returned (wrapped) when a key is missing or too small.
var ErrInvalidKey = errors.New("sealedbox: invalid key")
