// Package agentnet owns the per-agent Docker networks that isolate agents
// from each other (issue 13 §4): each agent gets its own bridge on which
// only it and the control plane have endpoints, both at pinned addresses
// of a small subnet clawker allocates itself. Agents therefore cannot reach
// each other, and reach the CP by an address no other container can claim.
package agentnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/moby/moby/api/types/network"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

const (
	// Purpose is the dev.clawker.purpose label value of an agent network.
	Purpose = "agent-net"
	// NamePrefix starts every agent network's name. It must sort after
	// "clawker-net": Docker gives a container its default route and its
	// published ports on the endpoint whose network name sorts first, and
	// the CP's admin/health ports must stay on clawker-net (a CP whose
	// gateway moved to an agent network lost its published ports when that
	// network was removed; seen on Docker 20.10).
	NamePrefix = "clawker-net-agent."
	// EnvPool overrides the IPv4 pool agent subnets are carved from.
	EnvPool = "CLAWKER_AGENT_SUBNET_POOL"
	// DefaultPool holds 4,096 agent subnets of SubnetBits; it lies outside
	// Docker's default address pools (172.17-31/16, 192.168/20).
	DefaultPool = "10.213.0.0/16"
	// SubnetBits is each agent network's prefix length: .1 gateway, .2 CP,
	// .3 agent, nothing else is ever allocated.
	SubnetBits = 28
)

// ErrNotAgentNet: a network with an agent network's name exists but clawker
// did not make it (labels missing or for another agent), or it lacks the
// subnet the pinned addresses are derived from.
var ErrNotAgentNet = errors.New("not a clawker agent network")

// Name is the agent network's name: clawker-net-agent.<project>.<agent>, or
// clawker-net-agent.<agent> for a global agent (the agent's full name with the
// clawker. prefix swapped).
func Name(p auth.ProjectSlug, a auth.AgentName) string {
	return NamePrefix + strings.TrimPrefix(auth.AgentFullName(p, a), "clawker.")
}

// NameFromLabels derives the agent network's name from an agent
// container's labels; ok is false when the labels are not a valid agent
// identity (such a container has no agent network).
func NameFromLabels(labels map[string]string) (string, bool) {
	a, err := auth.NewAgentName(labels[consts.LabelAgent])
	if err != nil {
		return "", false
	}
	p, err := auth.NewProjectSlug(labels[consts.LabelProject])
	if err != nil {
		return "", false
	}
	return Name(p, a), true
}

// NameOf is Name for untyped project and agent strings (as events and
// registry rows carry them); "" when they are not a valid identity.
func NameOf(project, agent string) string {
	n, _ := NameFromLabels(map[string]string{consts.LabelProject: project, consts.LabelAgent: agent})
	return n
}

// Net is one agent network with its pinned addresses.
type Net struct {
	Name   string
	ID     string
	Subnet netip.Prefix
}

// CPAddr is the CP's pinned address on the network (.2).
func (n Net) CPAddr() netip.Addr { return nthAddr(n.Subnet, 2) }

// AgentAddr is the agent's pinned address on the network (.3).
func (n Net) AgentAddr() netip.Addr { return nthAddr(n.Subnet, 3) }

func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// Labels are the labels of the agent network of (p, a), without the
// managed/extra labels the caller adds.
func Labels(p auth.ProjectSlug, a auth.AgentName) map[string]string {
	l := map[string]string{
		consts.LabelManaged: "true",
		consts.LabelPurpose: Purpose,
		consts.LabelAgent:   a.String(),
	}
	if !p.IsZero() {
		l[consts.LabelProject] = p.String()
	}
	return l
}

// FromNetwork checks that n is the agent network clawker made for (p, a)
// and returns it with its subnet. The label check is what refuses a
// same-named network someone else made: its subnet could put a third
// container at the CP's pinned address.
func FromNetwork(n network.Network, p auth.ProjectSlug, a auth.AgentName) (Net, error) {
	want := Labels(p, a)
	for k, v := range want {
		if n.Labels[k] != v {
			return Net{}, fmt.Errorf("network %s: %w (label %s=%q, want %q)", n.Name, ErrNotAgentNet, k, n.Labels[k], v)
		}
	}
	if p.IsZero() && n.Labels[consts.LabelProject] != "" {
		return Net{}, fmt.Errorf("network %s: %w (label %s=%q on a global agent's network)", n.Name, ErrNotAgentNet, consts.LabelProject, n.Labels[consts.LabelProject])
	}
	sub, ok := subnetOf(n)
	if !ok {
		return Net{}, fmt.Errorf("network %s: %w (no IPv4 /%d subnet)", n.Name, ErrNotAgentNet, SubnetBits)
	}
	return Net{Name: n.Name, ID: n.ID, Subnet: sub}, nil
}

// subnetOf returns n's IPv4 subnet of SubnetBits.
func subnetOf(n network.Network) (netip.Prefix, bool) {
	for _, c := range n.IPAM.Config {
		if c.Subnet.IsValid() && c.Subnet.Addr().Is4() && c.Subnet.Bits() == SubnetBits {
			return c.Subnet.Masked(), true
		}
	}
	return netip.Prefix{}, false
}

// Pool returns the configured pool: $CLAWKER_AGENT_SUBNET_POOL or
// DefaultPool. It must be IPv4 and hold at least one subnet.
func Pool() (netip.Prefix, error) {
	s := os.Getenv(EnvPool)
	if s == "" {
		s = DefaultPool
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is4() || p.Bits() > SubnetBits {
		return netip.Prefix{}, fmt.Errorf("%s=%q: want an IPv4 prefix of /%d or shorter, e.g. %s", EnvPool, s, SubnetBits, DefaultPool)
	}
	return p.Masked(), nil
}

// subnetCount is how many agent subnets pool holds.
func subnetCount(pool netip.Prefix) int { return 1 << (SubnetBits - pool.Bits()) }

// subnetAt returns the i-th agent subnet of pool.
func subnetAt(pool netip.Prefix, i int) netip.Prefix {
	b := pool.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) << (32 - SubnetBits)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), SubnetBits)
}
