package peerid

import (
	"context"
	"errors"
	"net/netip"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
)

var (
	// ErrAmbiguousPeerIP: two or more purpose=agent containers on
	// clawker-net advertise the peer IP. Fail closed.
	ErrAmbiguousPeerIP = errors.New("multiple purpose=agent containers match peer IP")
	// ErrInvalidAgentLabel: the matched container's dev.clawker.agent
	// label is missing or malformed.
	ErrInvalidAgentLabel = errors.New("agent container has invalid identity label")
	// ErrNoContainerForPeerIP: nothing on clawker-net owns the peer IP.
	ErrNoContainerForPeerIP = errors.New("no purpose=agent container with matching clawker-net IP")
)

// Container is the authoritative identity of an agent container as
// resolved from its live mTLS peer IP (agent.ResolvedContainer).
type Container struct {
	ContainerID string
	Project     auth.ProjectSlug
	AgentName   auth.AgentName
}

// Resolver resolves a live mTLS peer IP to the purpose=agent container
// owning that IP (agent.ContainerByPeerIP).
type Resolver interface {
	LookupByIP(ctx context.Context, ip netip.Addr) (Container, error)
}

// DockerClient is the slice of the Docker API the Index uses.
// *mobyclient.Client satisfies it; tests pass a counting fake.
type DockerClient interface {
	ContainerList(ctx context.Context, options mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error)
	ContainerInspect(ctx context.Context, containerID string, options mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error)
}
