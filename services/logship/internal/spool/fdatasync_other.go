//go:build !linux

package spool

import "os"

// fdatasync is fsync where fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }

// startWriteback does nothing here (see the Linux one).
func startWriteback(*os.File, int64, int64) {}
