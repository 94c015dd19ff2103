package agent

import (
	"context"
	"fmt"
	"net/netip"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// Where a dial goes: the container's address on its own agent network,
// resolved fresh for every attempt.

// DockerInspector is the slice of the Docker API the Dialer uses;
// *mobyclient.Client satisfies it.
type DockerInspector interface {
	ContainerInspect(ctx context.Context, containerID string, options mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error)
}

// DialTarget is where and whom one attempt dials, resolved fresh per
// attempt (a restarted container may have a new IP).
type DialTarget struct {
	Address   string // host:port
	AgentName string // dev.clawker.agent label
	Project   string // dev.clawker.project label
}

// Resolver resolves a container to its DialTarget. It returns
// ErrContainerGone / ErrContainerNotRunning (wrapped) to stop retrying;
// any other error is retried.
type Resolver func(ctx context.Context, containerID string) (DialTarget, error)

// WithResolver replaces the inspect-based address resolution (tests, and
// a CP running as a host process that reaches agents another way).
func WithResolver(r Resolver) DialerOption { return func(d *Dialer) { d.resolve = r } }

// inspectTarget resolves the container's agent-network IP by inspect.
func (d *Dialer) inspectTarget(ctx context.Context, containerID string) (DialTarget, error) {
	res, err := d.docker.ContainerInspect(ctx, containerID, mobyclient.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return DialTarget{}, fmt.Errorf("%w: %v", ErrContainerGone, err)
		}
		return DialTarget{}, fmt.Errorf("inspect %s: %w", containerID, err)
	}
	c := res.Container
	if c.State == nil || !c.State.Running {
		return DialTarget{}, ErrContainerNotRunning
	}
	var t DialTarget
	if c.Config != nil {
		t.AgentName, t.Project = auth.LabelIdentity(c.Config.Labels)
	}
	// Dial the agent on its own network, which only it and the CP share.
	netName, _ := agentnet.NameFromLabels(c.Config.Labels)
	if c.NetworkSettings == nil || netName == "" || c.NetworkSettings.Networks[netName] == nil {
		return t, fmt.Errorf("container %s not attached to its agent network %q yet", containerID, netName)
	}
	ip := c.NetworkSettings.Networks[netName].IPAddress
	if !ip.IsValid() {
		return t, fmt.Errorf("container %s has no %s address yet", containerID, netName)
	}
	t.Address = netip.AddrPortFrom(ip, consts.PortSession).String()
	return t, nil
}
