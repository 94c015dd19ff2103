package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// Untrusted-agent policies: what the CP does on its own when an agent's
// identity outcome violates the trust contract (AgentUntrusted).
const (
	PolicyOff    = "off"    // nothing (the event is still published)
	PolicyLog    = "log"    // a warning with event=untrusted_policy_log
	PolicyPause  = "pause"  // freeze the container
	PolicyDetach = "detach" // disconnect it from its agent network
	PolicyKill   = "kill"   // SIGKILL it
)

func validPolicy(p string) bool {
	switch p {
	case PolicyOff, PolicyLog, PolicyPause, PolicyDetach, PolicyKill:
		return true
	}
	return false
}

// untrustedPolicy is the optional bus subscriber enacting the policy. The
// dialer stays permissive (the Session remains up so the CP can act); this
// is where acting happens. The bus drops events for a slow subscriber, so
// agent.Start also re-runs it from the worldview on every reconcile pass
// (ReconcileWorldview).
type untrustedPolicy struct {
	action  string
	contain admin.Containment // nil: log only
	bus     interface{ Publish(overseer.Event) }
	log     *logger.Logger
	ctx     context.Context
	now     func() time.Time

	// mu serialises the event and reconcile paths, so one untrusted
	// outcome is never enacted twice; handled[id] is when the policy last
	// enacted on the container (pruned when it leaves the worldview).
	mu      sync.Mutex
	handled map[string]time.Time
}

func newUntrustedPolicy(ctx context.Context, action string, contain admin.Containment, bus interface{ Publish(overseer.Event) }, log *logger.Logger) *untrustedPolicy {
	return &untrustedPolicy{action: action, contain: contain, bus: bus, log: log, ctx: ctx, now: time.Now,
		handled: map[string]time.Time{}}
}

// startPolicy subscribes the containment policy for untrusted agents
// (nil when the policy is off). It runs before the agent subsystem starts
// so the boot dials' outcomes reach it, and is handed to agent.Start for
// its reconcile-time re-application.
func (d *Daemon) startPolicy(ctx context.Context, contain admin.Containment, bus *overseer.Overseer, closers *[]func()) *untrustedPolicy {
	if d.cfg.UntrustedPolicy == "" || d.cfg.UntrustedPolicy == PolicyOff {
		return nil
	}
	pol := newUntrustedPolicy(ctx, d.cfg.UntrustedPolicy, contain, bus, d.log.With("subsystem", "policy"))
	*closers = append(*closers, bus.Subscribe("untrusted-policy", isUntrusted, pol.handle))
	d.log.Info().Str("event", "untrusted_policy_enabled").Str("action", pol.action).Msg("containment policy active")
	return pol
}

// advisoryReasons are AgentUntrusted reasons the policy logs but never
// enacts: the CP's own failures, not evidence about the agent.
//   - registry_row_lost is what every running agent reports after the CP
//     lost its registry (degraded in-memory registry, `cp down --volumes`):
//     killing or cutting off all of them for the CP's own data loss would
//     turn a recoverable state into an outage. Recreate the agents.
//   - registry_error: the CP could not read its own registry.
//   - register_transport, register_timeout, register_cp_unavailable: the
//     Register exchange failed on the network or on a slow, flooded or
//     failing CP. The next reconcile redials and Register runs again.
var advisoryReasons = map[overseer.UntrustedReason]bool{
	overseer.ReasonRegistryRowLost:       true,
	overseer.ReasonRegistryError:         true,
	overseer.ReasonRegisterTransport:     true,
	overseer.ReasonRegisterTimeout:       true,
	overseer.ReasonRegisterCPUnavailable: true,
	// The agent's assertion was spent by an earlier exchange whose Register
	// failed CP-side: only recreating it helps, containing it does not.
	overseer.ReasonRegisterAssertionSpent: true,
}

func isUntrusted(e overseer.Event) bool {
	_, ok := e.(agent.AgentUntrusted)
	return ok
}

func (p *untrustedPolicy) handle(e overseer.Event) {
	ev, ok := e.(agent.AgentUntrusted)
	if !ok || p.action == PolicyOff {
		return
	}
	log := p.log.With("container_id", ev.ContainerID)
	if advisoryReasons[ev.Reason] && p.action != PolicyLog {
		log.Warn().Str("event", "untrusted_policy_skipped").Str("action", p.action).Str("agent", ev.AgentName).
			Str("project", ev.Project).Str("reason", string(ev.Reason)).Str("detail", ev.Detail).
			Msg("agent untrusted for a reason the policy does not act on (CP-side or network failure); recreate the agent or let the next reconcile retry Register")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Enacted at or after this outcome (the reconcile path got there first,
	// or an earlier finding of the same handshake): already contained.
	if at, done := p.handled[ev.ContainerID]; done && !at.Before(ev.At) {
		return
	}
	p.enact(p.ctx, ev, "untrusted_policy_applied")
}

// enact applies the action to ev's container and records it in handled.
// Callers hold p.mu. applied is the event= of the success line.
func (p *untrustedPolicy) enact(parent context.Context, ev agent.AgentUntrusted, applied string) {
	log := p.log.With("container_id", ev.ContainerID)
	if p.action == PolicyLog || p.contain == nil {
		log.Warn().Str("event", "untrusted_policy_log").Str("agent", ev.AgentName).Str("project", ev.Project).
			Str("reason", string(ev.Reason)).Str("detail", ev.Detail).Msg("agent untrusted; policy is log-only")
		p.markHandled(ev.ContainerID)
		return
	}
	ctx, cancel := context.WithTimeout(parent, 30*time.Second)
	defer cancel()
	var err error
	target := admin.Target{ContainerID: ev.ContainerID, Agent: ev.AgentName, Project: ev.Project}
	switch p.action {
	case PolicyPause:
		err = p.contain.Pause(ctx, target)
	case PolicyDetach:
		err = p.contain.Detach(ctx, target)
	case PolicyKill:
		err = p.contain.Kill(ctx, target)
	}
	if err != nil {
		// Not recorded as handled: the next reconcile pass retries.
		log.Error().Str("event", "untrusted_policy_failed").Str("action", p.action).Err(err).Msg("containment policy failed")
		return
	}
	p.markHandled(ev.ContainerID)
	reason := fmt.Sprintf("policy: %s %s", ev.Reason, ev.Detail)
	log.Warn().Str("event", applied).Str("action", p.action).Str("reason", reason).Msg("untrusted agent contained")
	p.bus.Publish(admin.AgentContained{Subject: overseer.Subject{ContainerID: ev.ContainerID, AgentName: ev.AgentName, Project: ev.Project},
		Action: p.action, Reason: reason, By: "policy", At: p.now()})
}
