package agent

import (
	"context"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/logger"
)

// Peer identity lives in package peerid; these are the spec's names for it
// (shared/spec/agent-package.txt), kept so the agent contract holds.
var (
	// ErrAmbiguousPeerIP: two or more purpose=agent containers on
	// clawker-net advertise the peer IP. Fail closed.
	ErrAmbiguousPeerIP = peerid.ErrAmbiguousPeerIP
	// ErrInvalidAgentLabel: the matched container's dev.clawker.agent
	// label is missing or malformed.
	ErrInvalidAgentLabel = peerid.ErrInvalidAgentLabel
	// ErrNoContainerForPeerIP: nothing on clawker-net owns the peer IP.
	ErrNoContainerForPeerIP = peerid.ErrNoContainerForPeerIP
)

// ResolvedContainer is the authoritative identity of an agent container
// as resolved from its live mTLS peer IP.
type ResolvedContainer = peerid.Container

// ContainerByPeerIP resolves a live mTLS peer IP to the purpose=agent
// container owning that IP on clawker-net.
type ContainerByPeerIP = peerid.Resolver

// MobyPeerLookup is the production ContainerByPeerIP backed by the Docker
// daemon: peerid.Index.
type MobyPeerLookup = peerid.Index

// NewMobyPeerLookup wraps a Docker client as a ContainerByPeerIP resolver;
// see peerid.NewIndex.
func NewMobyPeerLookup(cli peerid.DockerClient, log *logger.Logger) *MobyPeerLookup {
	return peerid.NewIndex(cli, log)
}

// The index answers Start's listing questions too.
var (
	_ ContainerLister    = (*MobyPeerLookup)(nil)
	_ RunningAgentLister = (*MobyPeerLookup)(nil)
	_ AgentInventory     = (*MobyPeerLookup)(nil)
)

// ContainerLister enumerates every purpose=agent container ID known to
// the daemon, stopped ones included.
type ContainerLister interface {
	ListAgentContainerIDs(ctx context.Context) ([]string, error)
}

type resolvedKey struct{}

// WithResolvedContainer attaches the peer-IP-resolved identity to ctx. A
// zero value (empty ContainerID) is dropped: ctx is returned unchanged.
func WithResolvedContainer(ctx context.Context, resolved ResolvedContainer) context.Context {
	if resolved.ContainerID == "" {
		return ctx
	}
	return context.WithValue(ctx, resolvedKey{}, resolved)
}

// ResolvedContainerFromContext returns the identity IdentityInterceptor
// attached. ok=false when absent or zero-valued.
func ResolvedContainerFromContext(ctx context.Context) (ResolvedContainer, bool) {
	r, ok := ctx.Value(resolvedKey{}).(ResolvedContainer)
	if !ok || r.ContainerID == "" {
		return ResolvedContainer{}, false
	}
	return r, true
}
