package egress

import (
	"context"
	"fmt"
	"time"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/egress/policy"
)

// Reload installs project's policy from the YAML body of its `egress:`
// section ("" = built-in defaults only). It applies to the next query,
// tunnel or request of every running agent of the project.
func (s *Service) Reload(project string, yamlBody []byte, by string) (policy.Policy, error) {
	p, err := s.store.set(keyOf(project), yamlBody, true)
	if err != nil {
		return policy.Policy{}, err
	}
	s.log.Info().Str("event", "egress_policy_loaded").Str("project", project).Int("allow", len(p.Allow)).
		Int("deny", len(p.Deny)).Bool("defaults", p.DefaultsEnabled()).Str("by", by).Msg("egress policy loaded")
	s.cfg.Bus.Publish(EgressPolicyLoaded{Project: project, Allow: len(p.Allow), Deny: len(p.Deny),
		Defaults: p.DefaultsEnabled(), By: by, At: time.Now()})
	return p, nil
}

// Allow grants the agent sub a timed bypass to target ("host" or
// "host:port"); it expires by itself and both ends are audited.
func (s *Service) Allow(sub overseer.Subject, target string, ttl time.Duration, by, reason string) (policy.Grant, error) {
	p, err := auth.NewProjectSlug(sub.Project)
	if err != nil {
		return policy.Grant{}, fmt.Errorf("grant: %w", err)
	}
	a, err := auth.NewAgentName(sub.AgentName)
	if err != nil {
		return policy.Grant{}, fmt.Errorf("grant: %w", err)
	}
	g, err := s.grants.Add(auth.AgentFullName(p, a), target, ttl)
	if err != nil {
		return policy.Grant{}, err
	}
	// A grant the next CP would not know is refused rather than half-made.
	if err := s.state.addGrant(context.Background(), savedGrant{Grant: g, sub: sub}); err != nil {
		s.grants.Revoke(g.ID)
		s.log.Error().Str("event", "egress_state_error").Err(err).Msg("timed egress grant refused")
		return policy.Grant{}, fmt.Errorf("grant: %w", policy.ErrNotStored)
	}
	s.mu.Lock()
	s.grantSub[g.ID] = sub
	s.mu.Unlock()
	s.log.Warn().Str("event", "egress_granted").Uint64("grant", g.ID).Str("container_id", sub.ContainerID).
		Str("agent", sub.AgentName).Str("project", sub.Project).Str("host", g.Host).Uint16("port", g.Port).
		Time("expires", g.Expires).Str("by", by).Str("reason", reason).Msg("timed egress grant")
	s.cfg.Bus.Publish(EgressGranted{Subject: sub, GrantID: g.ID, Host: g.Host, Port: g.Port, Expires: g.Expires,
		By: by, Reason: reason, At: time.Now()})
	return g, nil
}

// Block cuts (or with false restores) one agent container's egress. The
// Session to the CP is untouched: the gateway just denies the peer. The
// block is persisted; on a storage error a block still applies now (fail
// closed) and an unblock does not.
func (s *Service) Block(ctx context.Context, containerID string, blocked bool) error {
	if blocked {
		s.mu.Lock()
		s.blocked[containerID] = true
		s.mu.Unlock()
	}
	// A caller hanging up must not leave a block applied but unstored.
	if err := s.state.setBlock(context.WithoutCancel(ctx), containerID, blocked); err != nil {
		s.log.Error().Str("event", "egress_state_error").Str("container_id", containerID).Bool("blocked", blocked).
			Err(err).Msg("egress block not stored")
		return fmt.Errorf("block: %w", policy.ErrNotStored)
	}
	if !blocked {
		s.mu.Lock()
		delete(s.blocked, containerID)
		s.mu.Unlock()
	}
	return nil
}

// restore reinstalls the persisted blocks and unexpired grants.
func (s *Service) restore(ctx context.Context) error {
	ids, err := s.state.blocks(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.blocked[id] = true
	}
	saved, err := s.state.grants(ctx, time.Now())
	if err != nil {
		return err
	}
	n := 0
	for _, g := range saved {
		ok, err := s.grants.Restore(g.Grant)
		if err != nil {
			s.log.Warn().Str("event", "egress_state_error").Uint64("grant", g.ID).Err(err).Msg("saved grant skipped")
			continue
		}
		if ok {
			s.grantSub[g.ID] = g.sub
			n++
		}
	}
	if len(ids)+n > 0 {
		s.log.Info().Str("event", "egress_state_restored").Int("blocks", len(ids)).Int("grants", n).Msg("egress blocks and grants restored")
	}
	return nil
}

// Blocked reports whether containerID's egress is cut.
func (s *Service) Blocked(containerID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked[containerID]
}
