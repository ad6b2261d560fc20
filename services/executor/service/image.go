package service

import (
	"context"

	"github.com/hangar-dev/hangar/platform/runimage"
	"github.com/hangar-dev/hangar/services/executor/internal/dockerrt"
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

// RunnerImage makes sure the engine of this host has the image tag with the
// content of fs, importing it (through the Engine API: no registry needed)
// when it does not. It reports whether it imported it.
func RunnerImage(ctx context.Context, tag string, fs *runimage.Rootfs) (bool, error) {
	cli, err := dockerrt.NewClientFromEnv()
	if err != nil {
		return false, err
	}
	defer cli.Close()
	return runimage.Ensure(ctx, dockerrt.ImageEngine{API: cli}, tag, fs)
}
