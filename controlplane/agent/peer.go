package agent

import (
	"context"
	"errors"
	"net/netip"

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

// ResolvedContainer is the authoritative identity of an agent container
// as resolved from its live mTLS peer IP.
type ResolvedContainer struct {
	ContainerID string
	Project     auth.ProjectSlug
	AgentName   auth.AgentName
}

// ContainerByPeerIP resolves a live mTLS peer IP to the purpose=agent
// container owning that IP on clawker-net.
type ContainerByPeerIP interface {
	LookupByIP(ctx context.Context, ip netip.Addr) (ResolvedContainer, error)
}

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
