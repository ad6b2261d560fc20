package service

import (
	"context"
	"fmt"

	"github.com/hangar-dev/hangar/services/executor/internal/dockerrt"
	"github.com/hangar-dev/hangar/services/executor/internal/dockerrt/dockertest"
)

// PingDocker reports whether the Docker engine of this host (DOCKER_HOST or the
// default socket) answers.
func PingDocker(ctx context.Context) error {
	cli, err := dockerrt.NewClientFromEnv()
	if err != nil {
		return err
	}
	defer cli.Close()
	rt, err := dockerrt.New(cli, dockerrt.Options{ExecutorID: "ping"})
	if err != nil {
		return err
	}
	return rt.Ping(ctx)
}

// DemoImage makes sure the image tag exists locally, building a minimal shell
// image (the host's static busybox, imported through the Engine API: no
// registry needed) when it does not.
func DemoImage(ctx context.Context, tag string) error {
	cli, err := dockerrt.NewClientFromEnv()
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := dockertest.BusyboxImage(ctx, cli, tag); err != nil {
		return fmt.Errorf("build %s: %w", tag, err)
	}
	return nil
}
