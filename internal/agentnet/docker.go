package agentnet

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// Docker is the slice of the Docker API agent networks need.
type Docker interface {
	NetworkInspect(ctx context.Context, networkID string, options mobyclient.NetworkInspectOptions) (mobyclient.NetworkInspectResult, error)
	NetworkCreate(ctx context.Context, name string, options mobyclient.NetworkCreateOptions) (mobyclient.NetworkCreateResult, error)
	NetworkList(ctx context.Context, options mobyclient.NetworkListOptions) (mobyclient.NetworkListResult, error)
	NetworkConnect(ctx context.Context, networkID string, options mobyclient.NetworkConnectOptions) (mobyclient.NetworkConnectResult, error)
	NetworkDisconnect(ctx context.Context, networkID string, options mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error)
	NetworkRemove(ctx context.Context, networkID string, options mobyclient.NetworkRemoveOptions) (mobyclient.NetworkRemoveResult, error)
}

// OptInhibitIPv4 is the bridge driver option that leaves the bridge
// without a host IPv4 address: nothing on the host answers on the subnet.
const OptInhibitIPv4 = "com.docker.network.bridge.inhibit_ipv4"

// maxRefusals bounds how many subnets Docker may refuse as overlapping
// (another network, possibly not clawker's, holds them) before Ensure
// gives up: each refusal is one round trip.
const maxRefusals = 64

// Ensure returns the agent network of (p, a), creating it with a free
// subnet of the pool when missing. created tells the caller it owns the
// network (and removes it if the agent never starts). extra labels are
// added on creation (CLAWKER_LABELS, e.g. a test label).
func Ensure(ctx context.Context, c Docker, p auth.ProjectSlug, a auth.AgentName, extra map[string]string) (n Net, created bool, err error) {
	name := Name(p, a)
	if n, err := inspect(ctx, c, name, p, a); err == nil || !cerrdefs.IsNotFound(err) {
		return n, false, err
	}
	pool, err := Pool()
	if err != nil {
		return Net{}, false, err
	}
	used, err := usedSubnets(ctx, c)
	if err != nil {
		return Net{}, false, err
	}
	labels := Labels(p, a)
	for k, v := range extra {
		if _, own := labels[k]; !own {
			labels[k] = v
		}
	}
	// Start probing at a hash of the name so parallel runs rarely race for
	// the same subnet; Docker's overlap check arbitrates when they do.
	count := subnetCount(pool)
	h := fnv.New32a()
	h.Write([]byte(name))
	start := int(h.Sum32() % uint32(count))
	refusals := 0
	for i := range count {
		sub := subnetAt(pool, (start+i)%count)
		if used[sub] {
			continue
		}
		res, err := c.NetworkCreate(ctx, name, mobyclient.NetworkCreateOptions{
			Driver: "bridge",
			// No route out: the CP's egress gateway at .2 is the only way.
			Internal: true,
			// No host address on the bridge either: with one, an agent
			// reaches every host listener on 0.0.0.0 through .1 (Docker 20.10).
			Options: map[string]string{OptInhibitIPv4: "true"},
			IPAM:    &network.IPAM{Config: []network.IPAMConfig{{Subnet: sub, Gateway: nthAddr(sub, 1)}}},
			Labels:  labels,
		})
		switch {
		case err == nil:
			return Net{Name: name, ID: res.ID, Subnet: sub}, true, nil
		case isOverlap(err):
			refusals++
			if refusals >= maxRefusals {
				return Net{}, false, fmt.Errorf("create network %s: %d subnets of %s refused as overlapping (set %s to a free range): %w", name, refusals, pool, EnvPool, err)
			}
		case cerrdefs.IsConflict(err) || strings.Contains(err.Error(), "already exists"):
			// A concurrent run for the same agent made it first.
			n, err := inspect(ctx, c, name, p, a)
			return n, false, err
		default:
			return Net{}, false, fmt.Errorf("create network %s: %w", name, err)
		}
	}
	return Net{}, false, fmt.Errorf("create network %s: no free /%d left in %s (set %s to a larger range)", name, SubnetBits, pool, EnvPool)
}

func inspect(ctx context.Context, c Docker, name string, p auth.ProjectSlug, a auth.AgentName) (Net, error) {
	res, err := c.NetworkInspect(ctx, name, mobyclient.NetworkInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Net{}, err
		}
		return Net{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	return FromNetwork(res.Network.Network, p, a)
}

func isOverlap(err error) bool {
	s := err.Error()
	return strings.Contains(s, "overlap") || strings.Contains(s, "Pool overlaps")
}

// usedSubnets lists every network's IPv4 subnets, so allocation skips them
// without a refused create each.
func usedSubnets(ctx context.Context, c Docker) (map[netip.Prefix]bool, error) {
	res, err := c.NetworkList(ctx, mobyclient.NetworkListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	used := map[netip.Prefix]bool{}
	for _, n := range res.Items {
		for _, cfg := range n.IPAM.Config {
			if cfg.Subnet.IsValid() {
				used[cfg.Subnet.Masked()] = true
			}
		}
	}
	return used, nil
}

// List returns every network labelled as an agent network with a usable
// subnet.
func List(ctx context.Context, c Docker) ([]Net, error) {
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+Purpose, consts.LabelManaged+"=true")
	res, err := c.NetworkList(ctx, mobyclient.NetworkListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list agent networks: %w", err)
	}
	out := make([]Net, 0, len(res.Items))
	for _, n := range res.Items {
		if an, ok := Parse(n.Network); ok {
			out = append(out, an)
		}
	}
	return out, nil
}

// Parse reads a listed agent network (labels already filtered) into a Net;
// ok is false for a name or subnet clawker would not have made.
func Parse(n network.Network) (Net, bool) {
	sub, ok := subnetOf(n)
	if !ok || !strings.HasPrefix(n.Name, NamePrefix) {
		return Net{}, false
	}
	return Net{Name: n.Name, ID: n.ID, Subnet: sub}, true
}

// ConnectCP attaches the CP's network holder (whose namespace the CP
// container shares) to n at its pinned address; an endpoint already there
// is success.
func ConnectCP(ctx context.Context, c Docker, n Net) error {
	_, err := c.NetworkConnect(ctx, n.ID, mobyclient.NetworkConnectOptions{
		Container: consts.ControlPlaneNetContainer,
		EndpointConfig: &network.EndpointSettings{
			IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: n.CPAddr()},
			// The agent resolves the CP's name to .2, as when the CP
			// container itself was on the network.
			Aliases: []string{consts.ControlPlaneContainer},
		},
	})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("connect %s to %s at %s: %w", consts.ControlPlaneNetContainer, n.Name, n.CPAddr(), err)
	}
	return nil
}

// Remove disconnects the CP from the network and removes it; a network
// already gone is success. A CP from before the holder owned its own
// endpoint, so both are disconnected.
func Remove(ctx context.Context, c Docker, name string) error {
	for _, cp := range []string{consts.ControlPlaneNetContainer, consts.ControlPlaneContainer} {
		_, _ = c.NetworkDisconnect(ctx, name, mobyclient.NetworkDisconnectOptions{Container: cp, Force: true})
	}
	if _, err := c.NetworkRemove(ctx, name, mobyclient.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s: %w", name, err)
	}
	return nil
}
