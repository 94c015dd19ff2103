package peerid

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// Index is the production Resolver (agent.MobyPeerLookup), and also lists
// the agent containers for agent.Start.
//
// Cost model: it keeps an index from agent-network IP to candidate container
// IDs, built from a full list (Refresh, ListAgentContainerIDs) and kept
// current by Observe, which Follow calls for every container event on the
// bus. LookupByIP then costs one ContainerInspect of the indexed candidate
// — not one per agent container — and that inspect is what grants
// identity: the index only nominates, so a stale index can make a lookup
// miss (and trigger one resync list) but can never admit a peer whose IP
// the daemon does not currently attribute to that container.
//
// Ambiguity (two containers claiming one IP) is detected among indexed
// candidates, so a lookup answers only from an index known to be complete:
// one built by a full list with no update missed since (no dropped bus
// delivery, no failed inspect on an event). Otherwise it lists first.
//
// Limitation: an event still queued for the index (not dropped) is not yet
// in it. The wiring calls Refresh after the events stream reconnects,
// since events may have been missed in the gap.
type Index struct {
	cli DockerClient
	log *logger.Logger
	// network is "" (each agent's own network, derived from its labels:
	// see endpointIP) and purpose consts.PurposeAgent; fields only so the
	// real-engine benchmark can run beside a live clawker install without
	// its containers being seen as agents.
	network, purpose string

	mu   sync.Mutex
	byIP map[netip.Addr]map[string]struct{}
	ipOf map[string]netip.Addr

	// refreshMu serialises full lists. listsStarted counts lists begun, so
	// concurrent misses coalesce onto one list that began after they read
	// it: a list already in flight may predate the container a lookup
	// seeks (it held up an honest agent's Register under load).
	// refreshGen counts completed lists. Both are atomic so a lookup can
	// read them without waiting behind a list in flight.
	refreshMu    sync.Mutex
	listsStarted atomic.Uint64
	refreshGen   atomic.Uint64

	// missed counts updates the index failed to apply; covered is the
	// value of misses() the last full list started from. They differ when
	// the index may lack a container (see complete).
	missed  atomic.Uint64
	covered atomic.Uint64
	// drops reports the bus's dropped deliveries to Follow's subscriber
	// (nil when not following).
	drops atomic.Pointer[func() uint64]
}

// NewIndex wraps a Docker client as a Resolver. log defaults to
// logger.Nop() when nil. The index starts empty: the first lookup (or an
// explicit Refresh at CP start) fills it.
func NewIndex(cli DockerClient, log *logger.Logger) *Index {
	return &Index{
		cli:     cli,
		log:     logger.OrNop(log),
		purpose: consts.PurposeAgent,
		byIP:    make(map[netip.Addr]map[string]struct{}),
		ipOf:    make(map[string]netip.Addr),
	}
}

// ListAgentContainerIDs lists every purpose=agent container (stopped ones
// included) and, as a side effect, rebuilds the IP index from the same
// response.
func (m *Index) ListAgentContainerIDs(ctx context.Context) ([]string, error) {
	all, _, err := m.refresh(ctx)
	return all, err
}

// ListRunningAgentContainerIDs lists the running purpose=agent containers
// (the ones worth dialing) and rebuilds the IP index from the same list.
func (m *Index) ListRunningAgentContainerIDs(ctx context.Context) ([]string, error) {
	_, running, err := m.refresh(ctx)
	return running, err
}

// AgentContainerInventory answers both of agent.Start's questions — which
// agent containers exist, which are running — from one list.
func (m *Index) AgentContainerInventory(ctx context.Context) (all, running []string, err error) {
	return m.refresh(ctx)
}

// Refresh rebuilds the IP index from one full container list. Call it at
// CP start and after the Docker events stream reconnects.
func (m *Index) Refresh(ctx context.Context) error {
	_, _, err := m.refresh(ctx)
	return err
}

func (m *Index) refresh(ctx context.Context) (all, running []string, err error) {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	return m.refreshLocked(ctx)
}

func (m *Index) refreshLocked(ctx context.Context) (all, running []string, err error) {
	if m.cli == nil {
		return nil, nil, errors.New("peer lookup: nil docker client")
	}
	m.listsStarted.Add(1)
	// Read before listing: an update missed while the list is in flight
	// leaves the index incomplete again.
	misses := m.misses()
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
		ip := m.endpointIP(c.Labels, c.NetworkSettings.Networks)
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
	m.covered.Store(misses)
	m.refreshGen.Add(1)
	return ids, running, nil
}

// misses counts every update the index may have missed: failed inspects
// on events plus bus deliveries dropped for Follow's subscriber.
func (m *Index) misses() uint64 {
	n := m.missed.Load()
	if d := m.drops.Load(); d != nil {
		n += (*d)()
	}
	return n
}

// complete reports whether the index holds every running agent container
// the event feed has told it of: built by a full list, nothing missed since.
func (m *Index) complete() bool {
	return m.refreshGen.Load() > 0 && m.misses() == m.covered.Load()
}

// resyncAfter runs a full list unless one began after gen (listsStarted)
// was read and has ended (lists are serialised), so a burst of misses
// costs one list.
func (m *Index) resyncAfter(ctx context.Context, gen uint64) {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	if m.listsStarted.Load() != gen {
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
func (m *Index) Observe(ctx context.Context, containerID, action string) {
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
			// The index may now lack this container: the next lookup
			// resyncs before it trusts the index (see complete).
			m.missed.Add(1)
			m.log.Warn().Err(err).Str("event", "peer_lookup_inspect_failed").Str("container_id", containerID).Str("action", action).Msg("peer lookup: inspect on event failed")
			return
		}
		m.reindex(containerID, m.agentIP(res.Container))
	}
}

func (m *Index) forget(id string) { m.reindex(id, netip.Addr{}) }

// reindex records ip as id's clawker-net IP (zero removes it).
func (m *Index) reindex(id string, ip netip.Addr) {
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

func (m *Index) candidates(ip netip.Addr) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.byIP[ip]))
	for id := range m.byIP[ip] {
		out = append(out, id)
	}
	return out
}
