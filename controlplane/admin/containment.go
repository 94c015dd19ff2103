package admin

import (
	"context"
	"errors"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
)

// Target is the agent a containment action applies to.
type Target struct {
	ContainerID, Agent, Project string
}

// Containment carries out the containment actions on the runtime agents
// run on: DockerContainment, or pods (kubepods.Containment). Both Contain
// and the untrusted-agent policy act through it.
type Containment interface {
	Detach(ctx context.Context, t Target) error
	Pause(ctx context.Context, t Target) error
	Kill(ctx context.Context, t Target) error
}

// ErrUnsupported: the runtime has no such action (a pod cannot be paused).
var ErrUnsupported = errors.New("not available on this runtime")

// DockerContainment is Containment on the Docker engine: detach takes the
// agent off its own network, pause freezes it, kill sends SIGKILL.
type DockerContainment struct{ C ContainerControl }

// Detach implements Containment.
func (d DockerContainment) Detach(ctx context.Context, t Target) error {
	_, err := d.C.NetworkDisconnect(ctx, agentnet.NameOf(t.Project, t.Agent), mobyclient.NetworkDisconnectOptions{Container: t.ContainerID, Force: true})
	return err
}

// Pause implements Containment.
func (d DockerContainment) Pause(ctx context.Context, t Target) error {
	_, err := d.C.ContainerPause(ctx, t.ContainerID, mobyclient.ContainerPauseOptions{})
	return err
}

// Kill implements Containment.
func (d DockerContainment) Kill(ctx context.Context, t Target) error {
	_, err := d.C.ContainerKill(ctx, t.ContainerID, mobyclient.ContainerKillOptions{Signal: "KILL"})
	return err
}
