// Package atomicfile writes files durably and atomically: a reader sees the old
// content or the new content, never a mix, and once a write returns nil the new
// content survives a crash or power loss.
//
// Every write goes the same way: a temporary file in the target's directory
// (same file system, so the rename is atomic), the content, fsync of the file,
// rename over the target (or a hard link for Create), fsync of the directory so
// the rename itself is durable. The temporary file is removed on any failure.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteWith(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteWith replaces path with what fill writes, mode perm. fill's error
// aborts the write and leaves path untouched.
func WriteWith(path string, perm os.FileMode, fill func(io.Writer) error) error {
	if err := write(path, perm, fill, os.Rename); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Create writes data to path, mode perm, only if path does not exist yet: it
// fails with an error wrapping fs.ErrExist otherwise. The file appears
// complete or not at all.
func Create(path string, data []byte, perm os.FileMode) error {
	fill := func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
	if err := write(path, perm, fill, os.Link); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

func write(path string, perm os.FileMode, fill func(io.Writer) error, place func(oldpath, newpath string) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename: no-op; after a link: drops the temporary name
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := place(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making the creation, removal or renaming of its
// entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	if err := errors.Join(d.Sync(), d.Close()); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
