package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// PeerLookupClient is the slice of the Docker API MobyPeerLookup uses.
// *mobyclient.Client satisfies it; tests pass a counting fake.
type PeerLookupClient interface {
	ContainerList(ctx context.Context, options mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error)
	ContainerInspect(ctx context.Context, containerID string, options mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error)
}

// MobyPeerLookup is the production ContainerByPeerIP and ContainerLister.
//
// Cost model: it keeps an index from clawker-net IP to candidate container
// IDs, built from a full list (Refresh, ListAgentContainerIDs) and kept
// current by Observe, which the CP's Docker-events subscriber calls for
// every container event. LookupByIP then costs one ContainerInspect of the
// indexed candidate — not one per agent container — and that inspect is
// what grants identity: the index only nominates, so a stale index can make
// a lookup miss (and trigger one resync list) but can never admit a peer
// whose IP the daemon does not currently attribute to that container.
//
// Limitation: ambiguity (two containers claiming one IP) is detected among
// indexed candidates. The index learns of every running agent from the
// start-time list plus start/restart/unpause/network-connect events; the
// wiring should call Refresh after the events stream reconnects, since
// events may have been missed in the gap.
type MobyPeerLookup struct {
	cli PeerLookupClient
	log *logger.Logger
	// network and purpose are consts.NetworkName and consts.PurposeAgent;
	// fields only so the real-engine benchmark can run beside a live
	// clawker install without its containers being seen as agents.
	network, purpose string

	mu   sync.Mutex
	byIP map[netip.Addr]map[string]struct{}
	ipOf map[string]netip.Addr

	// refreshMu serialises full lists; refreshGen counts completed ones so
	// concurrent misses coalesce onto one list instead of each issuing one.
	// refreshGen is atomic so a lookup can read it without waiting behind a
	// list in flight.
	refreshMu  sync.Mutex
	refreshGen atomic.Uint64
}

var (
	_ ContainerByPeerIP  = (*MobyPeerLookup)(nil)
	_ ContainerLister    = (*MobyPeerLookup)(nil)
	_ RunningAgentLister = (*MobyPeerLookup)(nil)
	_ AgentInventory     = (*MobyPeerLookup)(nil)
)

// NewMobyPeerLookup wraps a Docker client as a ContainerByPeerIP resolver.
// log defaults to logger.Nop() when nil. The index starts empty: the first
// lookup (or an explicit Refresh at CP start) fills it.
func NewMobyPeerLookup(cli PeerLookupClient, log *logger.Logger) *MobyPeerLookup {
	return &MobyPeerLookup{
		cli:     cli,
		log:     logger.OrNop(log),
		network: consts.NetworkName,
		purpose: consts.PurposeAgent,
		byIP:    make(map[netip.Addr]map[string]struct{}),
		ipOf:    make(map[string]netip.Addr),
	}
}

// ListAgentContainerIDs lists every purpose=agent container (stopped ones
// included) and, as a side effect, rebuilds the IP index from the same
// response.
func (m *MobyPeerLookup) ListAgentContainerIDs(ctx context.Context) ([]string, error) {
	all, _, err := m.refresh(ctx)
	return all, err
}

// ListRunningAgentContainerIDs lists the running purpose=agent containers
// (the ones worth dialing) and rebuilds the IP index from the same list.
func (m *MobyPeerLookup) ListRunningAgentContainerIDs(ctx context.Context) ([]string, error) {
	_, running, err := m.refresh(ctx)
	return running, err
}

// AgentContainerInventory answers both of agent.Start's questions — which
// agent containers exist, which are running — from one list.
func (m *MobyPeerLookup) AgentContainerInventory(ctx context.Context) (all, running []string, err error) {
	return m.refresh(ctx)
}

// Refresh rebuilds the IP index from one full container list. Call it at
// CP start and after the Docker events stream reconnects.
func (m *MobyPeerLookup) Refresh(ctx context.Context) error {
	_, _, err := m.refresh(ctx)
	return err
}

func (m *MobyPeerLookup) refresh(ctx context.Context) (all, running []string, err error) {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	return m.refreshLocked(ctx)
}

func (m *MobyPeerLookup) refreshLocked(ctx context.Context) (all, running []string, err error) {
	if m.cli == nil {
		return nil, nil, errors.New("peer lookup: nil docker client")
	}
	res, err := m.cli.ContainerList(ctx, mobyclient.ContainerListOptions{
		All:     true,
		Filters: make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+m.purpose),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list agent containers: %w", err)
	}
	byIP := make(map[netip.Addr]map[string]struct{})
	ipOf := make(map[string]netip.Addr)
	ids := make([]string, 0, len(res.Items))
	for _, c := range res.Items {
		ids = append(ids, c.ID)
		if c.State != container.StateRunning {
			continue
		}
		running = append(running, c.ID)
		if c.NetworkSettings == nil {
			continue
		}
		ip := endpointIP(c.NetworkSettings.Networks, m.network)
		if !ip.IsValid() {
			continue
		}
		ipOf[c.ID] = ip
		if byIP[ip] == nil {
			byIP[ip] = make(map[string]struct{})
		}
		byIP[ip][c.ID] = struct{}{}
	}
	m.mu.Lock()
	m.byIP, m.ipOf = byIP, ipOf
	m.mu.Unlock()
	m.refreshGen.Add(1)
	return ids, running, nil
}

// resyncAfter runs a full list unless one completed after gen was read, so
// a burst of misses costs one list.
func (m *MobyPeerLookup) resyncAfter(ctx context.Context, gen uint64) {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	if m.refreshGen.Load() != gen {
		return
	}
	if _, _, err := m.refreshLocked(ctx); err != nil {
		m.log.Warn().Err(err).Str("event", "peer_lookup_refresh_failed").Msg("peer lookup: index resync failed")
	}
}

// Observe updates the index for one Docker container event. action is the
// Docker event action ("start", "restart", "unpause", "die", "destroy", …)
// or, for network events, "connect"/"disconnect" with the container ID
// taken from the event's "container" attribute. Events that may give a
// container a clawker-net IP cost one inspect; events that take it away
// cost nothing. Unknown actions are ignored.
func (m *MobyPeerLookup) Observe(ctx context.Context, containerID, action string) {
	switch action {
	case "die", "destroy":
		// Not "kill" or "stop": a kill with a non-fatal signal leaves the
		// container running, and a stop that ends it is followed by die.
		m.forget(containerID)
	case "start", "restart", "unpause", "connect", "disconnect":
		if m.cli == nil {
			return
		}
		res, err := m.cli.ContainerInspect(ctx, containerID, mobyclient.ContainerInspectOptions{})
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				m.forget(containerID)
				return
			}
			// Leave the index as is: a miss later triggers a resync.
			m.log.Warn().Err(err).Str("event", "peer_lookup_inspect_failed").Str("container_id", containerID).Str("action", action).Msg("peer lookup: inspect on event failed")
			return
		}
		m.reindex(containerID, m.agentIP(res.Container))
	}
}

func (m *MobyPeerLookup) forget(id string) { m.reindex(id, netip.Addr{}) }

// reindex records ip as id's clawker-net IP (zero removes it).
func (m *MobyPeerLookup) reindex(id string, ip netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.ipOf[id]; ok {
		delete(m.byIP[old], id)
		if len(m.byIP[old]) == 0 {
			delete(m.byIP, old)
		}
		delete(m.ipOf, id)
	}
	if !ip.IsValid() {
		return
	}
	m.ipOf[id] = ip
	if m.byIP[ip] == nil {
		m.byIP[ip] = make(map[string]struct{})
	}
	m.byIP[ip][id] = struct{}{}
}

func (m *MobyPeerLookup) candidates(ip netip.Addr) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.byIP[ip]))
	for id := range m.byIP[ip] {
		out = append(out, id)
	}
	return out
}

// LookupByIP resolves ip to the one running purpose=agent container whose
// clawker-net endpoint holds it, confirmed by a live inspect.
func (m *MobyPeerLookup) LookupByIP(ctx context.Context, ip netip.Addr) (ResolvedContainer, error) {
	if m.cli == nil {
		return ResolvedContainer{}, errors.New("peer lookup: nil docker client")
	}
	ip = ip.Unmap()
	gen := m.refreshGen.Load()
	cands := m.candidates(ip)
	resynced := false
	if len(cands) == 0 {
		m.resyncAfter(ctx, gen)
		resynced = true
		cands = m.candidates(ip)
	}
	tried := make(map[string]bool, len(cands))
	rc, err := m.confirm(ctx, ip, cands, tried)
	if errors.Is(err, ErrNoContainerForPeerIP) && !resynced {
		// Every indexed candidate moved away: the index is stale, so the
		// real owner (if any) may be unindexed. One resync, then retry the
		// new candidates only.
		m.resyncAfter(ctx, gen)
		var fresh []string
		for _, id := range m.candidates(ip) {
			if !tried[id] {
				fresh = append(fresh, id)
			}
		}
		if len(fresh) > 0 {
			rc, err = m.confirm(ctx, ip, fresh, tried)
		}
	}
	if err != nil {
		ev := "peer_lookup_failed"
		switch {
		case errors.Is(err, ErrNoContainerForPeerIP):
			ev = "peer_lookup_no_match"
		case errors.Is(err, ErrAmbiguousPeerIP):
			ev = "peer_lookup_ambiguous"
		case errors.Is(err, ErrInvalidAgentLabel):
			ev = "peer_lookup_invalid_label"
		}
		m.log.Warn().Err(err).Str("event", ev).Str("peer_ip", ip.String()).Msg("peer lookup failed")
		return ResolvedContainer{}, err
	}
	return rc, nil
}

// confirm inspects each candidate (one inspect each; normally exactly one
// candidate) and keeps those the daemon says currently own ip.
func (m *MobyPeerLookup) confirm(ctx context.Context, ip netip.Addr, cands []string, tried map[string]bool) (ResolvedContainer, error) {
	var (
		matches   []container.InspectResponse
		inspected int
		lastErr   error
	)
	for _, id := range cands {
		tried[id] = true
		res, err := m.cli.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				m.forget(id)
				inspected++
				continue
			}
			lastErr = err
			m.log.Warn().Err(err).Str("event", "peer_lookup_inspect_failed").Str("container_id", id).Msg("peer lookup: candidate inspect failed")
			continue
		}
		inspected++
		actual := m.agentIP(res.Container)
		m.reindex(id, actual)
		if actual == ip {
			matches = append(matches, res.Container)
		}
	}
	switch {
	case len(matches) > 1:
		return ResolvedContainer{}, fmt.Errorf("peer %s: %d containers: %w", ip, len(matches), ErrAmbiguousPeerIP)
	case len(matches) == 1:
		c := matches[0]
		var labels map[string]string
		if c.Config != nil {
			labels = c.Config.Labels
		}
		project, name, err := parseAgentLabels(labels)
		if err != nil {
			return ResolvedContainer{}, fmt.Errorf("container %s: %w", c.ID, err)
		}
		return ResolvedContainer{ContainerID: c.ID, Project: project, AgentName: name}, nil
	case inspected == 0 && lastErr != nil:
		return ResolvedContainer{}, fmt.Errorf("peer %s: inspect candidates: %w", ip, lastErr)
	default:
		return ResolvedContainer{}, fmt.Errorf("peer %s: %w", ip, ErrNoContainerForPeerIP)
	}
}

// agentIP returns the container's clawker-net IP if it is a running
// purpose=agent container, else the zero Addr.
func (m *MobyPeerLookup) agentIP(c container.InspectResponse) netip.Addr {
	if c.State == nil || !c.State.Running || c.State.Restarting {
		return netip.Addr{}
	}
	if c.Config == nil || c.Config.Labels[consts.LabelPurpose] != m.purpose {
		return netip.Addr{}
	}
	if c.NetworkSettings == nil {
		return netip.Addr{}
	}
	return endpointIP(c.NetworkSettings.Networks, m.network)
}

func endpointIP(nets map[string]*network.EndpointSettings, name string) netip.Addr {
	ep := nets[name]
	if ep == nil || !ep.IPAddress.IsValid() {
		return netip.Addr{}
	}
	return ep.IPAddress.Unmap()
}

// parseAgentLabels derives the typed identity from a container's labels. A
// missing or malformed agent label, or a malformed project label, is
// ErrInvalidAgentLabel; a missing (or empty) project label is the global
// agent case and yields the zero slug.
func parseAgentLabels(labels map[string]string) (auth.ProjectSlug, auth.AgentName, error) {
	raw, ok := labels[consts.LabelAgent]
	if !ok {
		return auth.ProjectSlug{}, auth.AgentName{}, fmt.Errorf("%w: %s missing", ErrInvalidAgentLabel, consts.LabelAgent)
	}
	name, err := auth.NewAgentName(raw)
	if err != nil {
		return auth.ProjectSlug{}, auth.AgentName{}, fmt.Errorf("%w: %v", ErrInvalidAgentLabel, err)
	}
	project, err := auth.NewProjectSlug(labels[consts.LabelProject])
	if err != nil {
		return auth.ProjectSlug{}, auth.AgentName{}, fmt.Errorf("%w: %v", ErrInvalidAgentLabel, err)
	}
	return project, name, nil
}
