package dockerrt

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// workspaceDir is where the run's volume is mounted in every container.
const workspaceDir = "/workspace"

// workspaceEntry is workspaceDir as a path of an archive extracted at /.
const workspaceEntry = "workspace"

// workingDir returns the phases' working directory in the container for a
// project root, and checks that the root stays inside the workspace and, when
// there is a host workspace, exists there as a directory.
func workingDir(hostWorkspace, projectRoot string) (string, error) {
	root := strings.Trim(projectRoot, "/")
	if root == "" {
		return workspaceDir, nil
	}
	clean := path.Clean(root)
	if clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(clean, "\x00") {
		return "", fmt.Errorf("project root %q leaves the workspace", projectRoot)
	}
	if hostWorkspace != "" {
		st, err := os.Stat(filepath.Join(hostWorkspace, filepath.FromSlash(clean)))
		if err != nil {
			return "", fmt.Errorf("project root %q: %w", projectRoot, err)
		}
		if !st.IsDir() {
			return "", fmt.Errorf("project root %q is not a directory", projectRoot)
		}
	}
	return path.Join(workspaceDir, clean), nil
}

// writeWorkspaceTar writes the archive extracted at / of a container: a
// "workspace/" entry (so that /workspace itself gets the owner; the engine
// skips a "./" entry), then the content of dir under workspace/, or, if dir is "", the directories of projectRoot (a
// path relative to /workspace). Directories, regular files and symbolic
// links (kept as links, never followed) are included; sockets, devices and
// pipes are not. Every entry belongs to own.
func writeWorkspaceTar(w io.Writer, dir, projectRoot string, own owner) error {
	tw := tar.NewWriter(w)
	mkdir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: own.uid, Gid: own.gid,
			ModTime: time.Now(), Format: tar.FormatPAX,
		})
	}
	if err := mkdir(workspaceEntry+"/", 0o755); err != nil {
		return fmt.Errorf("archive workspace: %w", err)
	}
	if dir == "" {
		name := workspaceEntry
		for part := range strings.SplitSeq(strings.Trim(projectRoot, "/"), "/") {
			if part == "" {
				continue
			}
			name = path.Join(name, part)
			if err := mkdir(name+"/", 0o755); err != nil {
				return fmt.Errorf("archive workspace: %w", err)
			}
		}
		if err := tw.Close(); err != nil {
			return fmt.Errorf("archive workspace: %w", err)
		}
		return nil
	}
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
		hdr.Name = workspaceEntry + "/" + filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = own.uid, own.gid, "", ""
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
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("archive workspace: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive workspace: %w", err)
	}
	return nil
}
