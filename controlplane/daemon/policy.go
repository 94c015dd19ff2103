package daemon

import (
	"context"
	"fmt"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// Untrusted-agent policies: what the CP does on its own when an agent's
// identity outcome violates the trust contract (AgentUntrusted).
const (
	PolicyOff    = "off"    // nothing (the event is still published)
	PolicyLog    = "log"    // a warning with event=untrusted_policy_log
	PolicyPause  = "pause"  // freeze the container
	PolicyDetach = "detach" // disconnect it from clawker-net
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
// is where acting happens.
type untrustedPolicy struct {
	action string
	docker admin.ContainerControl
	bus    interface{ Publish(overseer.Event) }
	log    *logger.Logger
	ctx    context.Context
	now    func() time.Time
}

// advisoryReasons are AgentUntrusted reasons the policy logs but never
// enacts. registry_row_lost is what every running agent reports after the
// CP lost its registry (degraded in-memory registry, `cp down --volumes`):
// the agents stay untrusted in the worldview, but killing or cutting off
// all of them for the CP's own data loss would turn a recoverable state
// into an outage. Recreate the agents to re-register them.
var advisoryReasons = map[overseer.UntrustedReason]bool{
	overseer.ReasonRegistryRowLost: true,
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
			Msg("agent untrusted for a reason the policy does not act on; recreate the agent to re-register it")
		return
	}
	if p.action == PolicyLog || p.docker == nil {
		log.Warn().Str("event", "untrusted_policy_log").Str("agent", ev.AgentName).Str("project", ev.Project).
			Str("reason", string(ev.Reason)).Str("detail", ev.Detail).Msg("agent untrusted; policy is log-only")
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	var err error
	switch p.action {
	case PolicyPause:
		_, err = p.docker.ContainerPause(ctx, ev.ContainerID, mobyclient.ContainerPauseOptions{})
	case PolicyDetach:
		_, err = p.docker.NetworkDisconnect(ctx, consts.NetworkName, mobyclient.NetworkDisconnectOptions{Container: ev.ContainerID, Force: true})
	case PolicyKill:
		_, err = p.docker.ContainerKill(ctx, ev.ContainerID, mobyclient.ContainerKillOptions{Signal: "KILL"})
	}
	if err != nil {
		log.Error().Str("event", "untrusted_policy_failed").Str("action", p.action).Err(err).Msg("containment policy failed")
		return
	}
	reason := fmt.Sprintf("policy: %s %s", ev.Reason, ev.Detail)
	log.Warn().Str("event", "untrusted_policy_applied").Str("action", p.action).Str("reason", reason).Msg("untrusted agent contained")
	p.bus.Publish(admin.AgentContained{ContainerID: ev.ContainerID, AgentName: ev.AgentName, Project: ev.Project,
		Action: p.action, Reason: reason, By: "policy", At: p.now()})
}
