package cli

import (
	"context"
	"fmt"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"
)

// Pull policies of run --pull, as docker run's.
const (
	pullMissing = "missing"
	pullAlways  = "always"
	pullNever   = "never"
)

// imageForRun inspects image, pulling it first through the engine's own
// pull (its registries, mirrors and credentials helpers) as policy says.
// No registry reachable is a clean ExitNotFound naming the image.
func (a *app) imageForRun(ctx context.Context, c runDocker, image, policy string) (mobyclient.ImageInspectResult, error) {
	img, err := c.ImageInspect(ctx, image)
	switch {
	case err == nil && policy != pullAlways:
		return img, nil
	case err != nil && !cerrdefs.IsNotFound(err):
		return img, fmt.Errorf("inspect image %s: %w", image, err)
	case err != nil && policy == pullNever:
		return img, withCode(ExitNotFound, fmt.Errorf("image %s not found locally and --pull never: docker pull %s (or build it) first", image, image))
	}
	if err != nil {
		fmt.Fprintf(a.errOut, "Unable to find image '%s' locally\n", image)
	}
	if perr := pullImage(ctx, c, a.errOut, image); perr != nil {
		if err == nil { // --pull always with a local copy: docker fails too
			return img, withCode(ExitError, perr)
		}
		return img, withCode(ExitNotFound, perr)
	}
	if img, err = c.ImageInspect(ctx, image); err != nil {
		return img, fmt.Errorf("inspect image %s after pulling it: %w", image, err)
	}
	return img, nil
}

// pullImage pulls image and writes one line per layer status change, as
// docker does on a non-terminal.
func pullImage(ctx context.Context, c imagePuller, w io.Writer, image string) error {
	resp, err := c.ImagePull(ctx, image, mobyclient.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("pull image %s: %w (is a registry reachable? else load or build the image)", image, err)
	}
	defer resp.Close()
	last := map[string]string{}
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return fmt.Errorf("pull image %s: %w", image, err)
		}
		if msg.Error != nil {
			return fmt.Errorf("pull image %s: %s (is a registry reachable? else load or build the image)", image, msg.Error.Message)
		}
		if msg.Status == "" || last[msg.ID] == msg.Status {
			continue
		}
		last[msg.ID] = msg.Status
		if msg.ID != "" {
			fmt.Fprintf(w, "%s: %s\n", termSafeLines(msg.ID), termSafeLines(msg.Status))
		} else {
			fmt.Fprintln(w, termSafeLines(msg.Status))
		}
	}
	return nil
}
