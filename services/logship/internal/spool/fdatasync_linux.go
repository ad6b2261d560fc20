package spool

import (
	"os"
	"syscall"
)

// fdatasync makes f's data durable, and its metadata as far as reading
// the data back needs it (its size), not its times.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// startWriteback starts writing f's bytes [off, off+n) to the disk,
// without waiting (sync_file_range SYNC_FILE_RANGE_WRITE), so that the
// commit's fdatasync finds most of them written. Errors are left to that
// fdatasync.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SyncFileRange(int(fd), off, n, 2 /* SYNC_FILE_RANGE_WRITE */)
	})
}
