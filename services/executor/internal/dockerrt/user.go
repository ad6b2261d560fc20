package dockerrt

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/moby/moby/client"
)

// copyFromClient reads files out of a container.
type copyFromClient interface {
	CopyFromContainer(ctx context.Context, id string, opts client.CopyFromContainerOptions) (client.CopyFromContainerResult, error)
}

// owner is a numeric user and group.
type owner struct{ uid, gid int }

// resolveUser turns the runner image's user ("", "name", "uid",
// "name:group", "uid:gid") into numeric ids, reading /etc/passwd and
// /etc/group of the created container when names are used. The engine's own
// resolution (the API's copyUIDGID) looks names up on the host on some
// engine versions, so the runtime resolves them itself and writes the ids
// into the workspace archive: the workspace then belongs to the user the
// phases run as, also for images that do not run as root.
func resolveUser(ctx context.Context, cli copyFromClient, id, user string) (owner, error) {
	name, group, hasGroup := strings.Cut(user, ":")
	if name == "" {
		return owner{}, nil
	}
	var o owner
	uid, err := strconv.Atoi(name)
	if err == nil {
		o.uid = uid
		// A numeric user need not be in /etc/passwd; its group then is 0,
		// as for the engine.
		if !hasGroup {
			if passwd, err := readContainerFile(ctx, cli, id, "/etc/passwd"); err == nil {
				if e, ok := findEntry(passwd, 2, name); ok && len(e) > 3 {
					o.gid, _ = strconv.Atoi(e[3])
				}
			}
		}
	} else {
		passwd, err := readContainerFile(ctx, cli, id, "/etc/passwd")
		if err != nil {
			return owner{}, fmt.Errorf("resolve user %q of the runner image: %w", user, err)
		}
		e, ok := findEntry(passwd, 0, name)
		if !ok || len(e) < 4 {
			return owner{}, fmt.Errorf("resolve user %q of the runner image: no such user in /etc/passwd", user)
		}
		if o.uid, err = strconv.Atoi(e[2]); err != nil {
			return owner{}, fmt.Errorf("resolve user %q of the runner image: bad uid %q", user, e[2])
		}
		if o.gid, err = strconv.Atoi(e[3]); err != nil {
			return owner{}, fmt.Errorf("resolve user %q of the runner image: bad gid %q", user, e[3])
		}
	}
	if !hasGroup || group == "" {
		return o, nil
	}
	if gid, err := strconv.Atoi(group); err == nil {
		o.gid = gid
		return o, nil
	}
	groups, err := readContainerFile(ctx, cli, id, "/etc/group")
	if err != nil {
		return owner{}, fmt.Errorf("resolve group %q of the runner image: %w", group, err)
	}
	e, ok := findEntry(groups, 0, group)
	if !ok || len(e) < 3 {
		return owner{}, fmt.Errorf("resolve group %q of the runner image: no such group in /etc/group", group)
	}
	if o.gid, err = strconv.Atoi(e[2]); err != nil {
		return owner{}, fmt.Errorf("resolve group %q of the runner image: bad gid %q", group, e[2])
	}
	return o, nil
}

// findEntry returns the fields of the first line of a passwd or group file
// whose field i equals value.
func findEntry(file []byte, i int, value string) ([]string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(file))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) > i && fields[i] == value {
			return fields, true
		}
	}
	return nil, false
}

// maxUserFile bounds what is read of /etc/passwd or /etc/group.
const maxUserFile = 4 << 20

// readContainerFile reads a regular file of a (created, not necessarily
// started) container through the API, which needs no tool in the image.
func readContainerFile(ctx context.Context, cli copyFromClient, id, path string) ([]byte, error) {
	res, err := cli.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read %s: not a regular file", path)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxUserFile))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		return b, nil
	}
}
