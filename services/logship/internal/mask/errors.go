package mask

import "errors"

// ErrClosed is returned by Write and Flush after Close.
var ErrClosed = errors.New("mask: write after close")
