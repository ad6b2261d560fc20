package dockerrt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"

	"github.com/hangar-dev/hangar/platform/runimage"
)

// ImageAPI is the part of the Docker client ImageEngine uses.
type ImageAPI interface {
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImageImport(ctx context.Context, source client.ImageImportSource, ref string, opts client.ImageImportOptions) (client.ImageImportResult, error)
}

// ImageEngine is a runimage.Engine over the Engine API: runner images are
// imported from a tarball, with no registry involved.
type ImageEngine struct{ API ImageAPI }

var _ runimage.Engine = ImageEngine{}

// ImageComment inspects ref.
func (e ImageEngine) ImageComment(ctx context.Context, ref string) (string, bool, error) {
	res, err := e.API.ImageInspect(ctx, ref)
	if err == nil {
		return res.Comment, true, nil
	}
	if cerrdefs.IsNotFound(err) {
		return "", false, nil
	}
	return "", false, fmt.Errorf("inspect %s: %w", ref, err)
}

// ImportImage imports fs as ref and waits for the engine to finish.
func (e ImageEngine) ImportImage(ctx context.Context, ref string, fs *runimage.Rootfs) error {
	resp, err := e.API.ImageImport(ctx, client.ImageImportSource{Source: bytes.NewReader(fs.Tar), SourceName: "-"}, ref, client.ImageImportOptions{
		Message: fs.Message,
		Changes: fs.Changes,
	})
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	defer resp.Close()
	dec := json.NewDecoder(resp)
	for {
		var msg jsonstream.Message
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("import %s: %w", ref, err)
		}
		if msg.Error != nil {
			return fmt.Errorf("import %s: %s", ref, msg.Error.Message)
		}
	}
}
