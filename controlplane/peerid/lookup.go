package peerid

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"
)

// LookupByIP resolves ip to the one running purpose=agent container whose
// clawker-net endpoint holds it, confirmed by a live inspect.
func (m *Index) LookupByIP(ctx context.Context, ip netip.Addr) (Container, error) {
	if m.cli == nil {
		return Container{}, errors.New("peer lookup: nil docker client")
	}
	ip = ip.Unmap()
	gen := m.listsStarted.Load()
	resynced, err := m.ensureComplete(ctx, gen)
	if err != nil {
		m.log.Warn().Err(err).Str("event", "peer_lookup_failed").Str("peer_ip", ip.String()).Msg("peer lookup failed")
		return Container{}, err
	}
	if resynced {
		gen = m.listsStarted.Load()
	}
	cands := m.candidates(ip)
	if len(cands) == 0 && !resynced {
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
		return Container{}, err
	}
	return rc, nil
}

// confirm inspects each candidate (one inspect each; normally exactly one
// candidate) and keeps those the daemon says currently own ip.
func (m *Index) confirm(ctx context.Context, ip netip.Addr, cands []string, tried map[string]bool) (Container, error) {
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
		return Container{}, fmt.Errorf("peer %s: %d containers: %w", ip, len(matches), ErrAmbiguousPeerIP)
	case len(matches) == 1:
		c := matches[0]
		var labels map[string]string
		if c.Config != nil {
			labels = c.Config.Labels
		}
		project, name, err := ParseAgentLabels(labels)
		if err != nil {
			return Container{}, fmt.Errorf("container %s: %w", c.ID, err)
		}
		return Container{ContainerID: c.ID, Project: project, AgentName: name}, nil
	case inspected == 0 && lastErr != nil:
		return Container{}, fmt.Errorf("peer %s: inspect candidates: %w", ip, lastErr)
	default:
		return Container{}, fmt.Errorf("peer %s: %w", ip, ErrNoContainerForPeerIP)
	}
}

// ensureComplete lists when the index may lack a container (see complete),
// so ambiguity is judged against every container holding the IP. It
// reports whether a list ran. Two tries cover a list that raced an update;
// if the index is still incomplete the lookup fails closed.
func (m *Index) ensureComplete(ctx context.Context, gen uint64) (resynced bool, err error) {
	for range 2 {
		if m.complete() {
			return resynced, nil
		}
		m.resyncAfter(ctx, gen)
		resynced = true
		gen = m.listsStarted.Load()
	}
	if m.complete() {
		return true, nil
	}
	return true, errors.New("peer lookup: index incomplete and resync failed")
}
