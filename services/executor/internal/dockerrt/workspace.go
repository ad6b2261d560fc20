package dockerrt

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/hangar-dev/hangar/services/executor/internal/wsarchive"
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
	if err := wsarchive.Add(tw, dir, workspaceEntry+"/", own.uid, own.gid); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive workspace: %w", err)
	}
	return nil
}

// exportWorkspace writes the content of the run's volume to w as a tar
// archive with names relative to the workspace (runner.Job.AfterPhases),
// read through the exited container id, which has the volume mounted. The
// engine archives /workspace as "workspace/..."; the prefix is removed,
// ownership dropped, and hard links (which the engine emits for files with
// several names) become relative symbolic links to the first name.
func (rn *session) exportWorkspace(ctx context.Context, id string, w io.Writer) error {
	res, err := rn.r.cli.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: workspaceDir})
	if err != nil {
		return fmt.Errorf("export workspace: %w", err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("export workspace: %w", err)
		}
		name, ok := strings.CutPrefix(hdr.Name, workspaceEntry+"/")
		if !ok || name == "" {
			continue // the workspace directory itself
		}
		out := &tar.Header{
			Typeflag: hdr.Typeflag, Name: name, Linkname: hdr.Linkname, Size: hdr.Size,
			Mode: hdr.Mode, ModTime: hdr.ModTime, Format: tar.FormatPAX,
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
		case tar.TypeLink:
			target, ok := strings.CutPrefix(hdr.Linkname, workspaceEntry+"/")
			if !ok {
				continue
			}
			rel, err := filepath.Rel(path.Dir(name), target)
			if err != nil {
				return fmt.Errorf("export workspace: hard link %q: %w", name, err)
			}
			out.Typeflag, out.Linkname, out.Size = tar.TypeSymlink, filepath.ToSlash(rel), 0
		default:
			continue
		}
		if err := tw.WriteHeader(out); err != nil {
			return fmt.Errorf("export workspace: %w", err)
		}
		if out.Typeflag == tar.TypeReg {
			if _, err := io.CopyN(tw, tr, out.Size); err != nil {
				return fmt.Errorf("export workspace: %w", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("export workspace: %w", err)
	}
	return nil
}
