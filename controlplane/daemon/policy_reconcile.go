package daemon

import (
	"context"
	"sort"
	"time"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
)

var _ agent.WorldviewConsumer = (*untrustedPolicy)(nil)

// ReconcileWorldview re-applies the policy from a worldview snapshot; it
// runs on every agent reconcile pass. The event path can miss an outcome
// (the bus drops events for a slow subscriber, or the Docker call failed),
// the worldview cannot: an agent still holding an enforcing untrusted
// reason for a Session the policy has not enacted on is contained now.
// Idempotent: an agent enacted on since its Session connected is skipped.
func (p *untrustedPolicy) ReconcileWorldview(ctx context.Context, s *overseer.State) {
	if p.action == PolicyOff || s == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.handled {
		if _, ok := s.Agents[id]; !ok {
			delete(p.handled, id) // destroyed: bound the map
		}
	}
	ids := make([]string, 0, len(s.Agents))
	for id := range s.Agents {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := s.Agents[id]
		reason, ok := enforcingReason(a.UntrustedReasons)
		// A closed Session means the container stopped (or the CP is
		// stopping): nothing left to contain, and Docker would refuse.
		if !ok || a.Session == overseer.SessionStatusClosed {
			continue
		}
		if at, done := p.handled[id]; done && !at.Before(a.ConnectedAt) {
			continue
		}
		p.log.Warn().Str("event", "untrusted_policy_reconcile").Str("container_id", id).Str("action", p.action).
			Str("reason", string(reason)).Msg("untrusted agent not yet contained (event dropped or action failed); applying from the worldview")
		p.enact(ctx, agent.AgentUntrusted{Subject: overseer.Subject{ContainerID: id, AgentName: a.AgentName, Project: a.Project},
			Reason: reason, Detail: "(from the worldview on reconcile)", At: a.ConnectedAt}, "untrusted_policy_reapplied")
	}
}

// enforcingReason returns the first reason the policy acts on.
func enforcingReason(rs []overseer.UntrustedReason) (overseer.UntrustedReason, bool) {
	for _, r := range rs {
		if !advisoryReasons[r] {
			return r, true
		}
	}
	return "", false
}

// markHandled records that the policy enacted on id now. Callers hold p.mu.
func (p *untrustedPolicy) markHandled(id string) {
	if p.handled == nil {
		p.handled = map[string]time.Time{}
	}
	p.handled[id] = p.now()
}
