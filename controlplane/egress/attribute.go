package egress

import (
	"context"
	"errors"
	"net/netip"
	"strings"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/egress/gateway"
)

// PeerLookup is the CP's peer-IP → agent container lookup (the same one
// Register and the token endpoint use).
type PeerLookup interface {
	LookupByIP(ctx context.Context, ip netip.Addr) (agent.ResolvedContainer, error)
}

// TrustFunc reports whether the CP has proven the agent in containerID
// (a live Session matching its registry row, no findings).
type TrustFunc func(containerID string) bool

var errBlocked = errors.New("egress blocked by containment")

// attributor is the gateway's Attributor: peer IP → container → labels →
// proven. It fails closed: no lookup, no trust view, or a block denies.
type attributor struct{ s *Service }

func (a attributor) Attribute(ctx context.Context, ip netip.Addr) (gateway.Agent, bool, error) {
	rc, err := a.s.peers.LookupByIP(ctx, ip)
	if err != nil {
		return gateway.Agent{}, false, err
	}
	ag := gateway.Agent{ContainerID: rc.ContainerID, Name: auth.AgentFullName(rc.Project, rc.AgentName), Project: rc.Project.String()}
	if a.s.Blocked(rc.ContainerID) {
		return ag, false, errBlocked
	}
	trust := a.s.trust.Load()
	if trust == nil || !(*trust)(rc.ContainerID) {
		return ag, false, nil
	}
	return ag, true, nil
}

// agentShort is the agent's short name from its full name.
func agentShort(a gateway.Agent) string {
	n := strings.TrimPrefix(a.Name, "clawker.")
	if a.Project != "" {
		n = strings.TrimPrefix(n, a.Project+".")
	}
	return n
}
