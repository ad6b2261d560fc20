// Package wsarchive writes a run's workspace as a tar archive and extracts one
// back, refusing anything that would land outside the target directory.
//
// Archives hold directories, regular files and symbolic links, with names
// relative to the workspace root ("main.tf", "mod/a.tf", "dir/"); ownership
// is not kept, only the permission bits (set-id and sticky bits dropped).
package wsarchive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ErrUnsafe is wrapped by Extract for an entry that would escape the target
// directory: an absolute name, a ".." component, a symbolic link pointing
// out (or absolute), an entry below a symbolic link, or a hard link.
var ErrUnsafe = errors.New("unsafe archive entry")

// ErrTooLarge is wrapped by Extract when the archive's content exceeds the
// limit.
var ErrTooLarge = errors.New("archive content exceeds the limit")

// Write writes the content of dir to w as a tar archive (see the package
// documentation). Sockets, devices and pipes are left out; symbolic links are
// kept as links, never followed.
func Write(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	if err := Add(tw, dir, "", 0, 0); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive workspace: %w", err)
	}
	return nil
}

// Add writes the content of dir into tw, each entry named prefix + its path
// relative to dir and owned by uid:gid. Directories, regular files and
// symbolic links (kept as links, never followed) are included; sockets,
// devices and pipes are not.
func Add(tw *tar.Writer, dir, prefix string, uid, gid int) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.IsDir(), info.Mode().IsRegular():
		default:
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = prefix + filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = uid, gid, "", ""
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.CopyN(tw, f, hdr.Size)
		return errors.Join(err, f.Close())
	})
	if err != nil {
		return fmt.Errorf("archive workspace: %w", err)
	}
	return nil
}

// Extract extracts the tar archive r into dir, an existing directory, writing
// at most maxBytes of file content (0: no limit). It refuses (ErrUnsafe)
// every entry that could write or point outside dir, and it writes only
// through an os.Root of dir, which does not follow a link out of it either.
// Entries of other types (devices, pipes) are skipped.
func Extract(r io.Reader, dir string, maxBytes int64) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("extract workspace: %w", err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	links := map[string]bool{} // symbolic links extracted so far
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("extract workspace: %w", err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return fmt.Errorf("extract workspace: %w", err)
		}
		if name == "." {
			continue
		}
		for p := name; ; {
			if links[p] {
				return fmt.Errorf("extract workspace: %w: %q is below or replaces a symbolic link", ErrUnsafe, hdr.Name)
			}
			if p = path.Dir(p); p == "." {
				break
			}
		}
		local := filepath.FromSlash(name)
		perm := fs.FileMode(hdr.Mode) & fs.ModePerm
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(local, 0o755); err != nil {
				return fmt.Errorf("extract workspace: %w", err)
			}
			if err := root.Chmod(local, perm|0o700); err != nil {
				return fmt.Errorf("extract workspace: %w", err)
			}
		case tar.TypeReg:
			if hdr.Size < 0 || maxBytes > 0 && total+hdr.Size > maxBytes {
				return fmt.Errorf("extract workspace: %w (%d bytes)", ErrTooLarge, maxBytes)
			}
			total += hdr.Size
			if err := mkParent(root, local); err != nil {
				return fmt.Errorf("extract workspace: %w", err)
			}
			f, err := root.OpenFile(local, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm|0o600)
			if err != nil {
				return fmt.Errorf("extract workspace: %w", err)
			}
			_, err = io.CopyN(f, tr, hdr.Size)
			if err = errors.Join(err, f.Close()); err != nil {
				return fmt.Errorf("extract workspace: %q: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := linkTarget(name, hdr.Linkname); err != nil {
				return fmt.Errorf("extract workspace: %w", err)
			}
			if err := mkParent(root, local); err != nil {
				return fmt.Errorf("extract workspace: %w", err)
			}
			if err := root.Symlink(hdr.Linkname, local); err != nil {
				return fmt.Errorf("extract workspace: %w", err)
			}
			links[name] = true
		case tar.TypeLink:
			return fmt.Errorf("extract workspace: %w: hard link %q", ErrUnsafe, hdr.Name)
		default:
			// Devices, pipes, PAX globals: nothing to create.
		}
	}
}

// entryName returns the cleaned, slash-separated name of an entry, or an
// ErrUnsafe error if it is absolute or leaves the root.
func entryName(raw string) (string, error) {
	if raw == "" || strings.HasPrefix(raw, "/") || strings.Contains(raw, "\x00") || strings.Contains(raw, `\`) || filepath.VolumeName(raw) != "" {
		return "", fmt.Errorf("%w: %q", ErrUnsafe, raw)
	}
	for part := range strings.SplitSeq(raw, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q", ErrUnsafe, raw)
		}
	}
	return path.Clean(raw), nil
}

// linkTarget checks that a symbolic link at name pointing to target stays in
// the root: a relative target that, from the link's directory, does not
// leave it. (Entries below links are refused, so the link's directory is a
// real directory and the lexical check holds.)
func linkTarget(name, target string) error {
	if target == "" || path.IsAbs(target) || strings.Contains(target, "\x00") {
		return fmt.Errorf("%w: symbolic link %q points to %q", ErrUnsafe, name, target)
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("%w: symbolic link %q points out of the workspace", ErrUnsafe, name)
	}
	return nil
}

func mkParent(root *os.Root, local string) error {
	if d := filepath.Dir(local); d != "." {
		return root.MkdirAll(d, 0o755)
	}
	return nil
}
