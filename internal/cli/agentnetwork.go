package cli

import (
	"context"
	"errors"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// prepareAgentNet makes the agent's own network and attaches the CP to it
// (when the CP container exists; cp up attaches it later otherwise), so
// the agent's first dial to the CP's pinned address finds it. undo
// removes a network this call created; the caller runs it when the agent
// never starts, so nothing half-created stays.
func prepareAgentNet(ctx context.Context, c netDocker, p auth.ProjectSlug, a auth.AgentName) (agentnet.Net, func(), error) {
	// An orphaned network of an earlier incarnation of this agent may be
	// removed (by the CP's janitor or a concurrent rm) between finding it
	// and attaching the CP: then make a fresh one.
	for attempt := 1; ; attempt++ {
		n, undo, err := prepareAgentNetOnce(ctx, c, p, a)
		if err == nil || !cerrdefs.IsNotFound(err) || attempt == 3 {
			return n, undo, err
		}
	}
}

func prepareAgentNetOnce(ctx context.Context, c netDocker, p auth.ProjectSlug, a auth.AgentName) (agentnet.Net, func(), error) {
	n, created, err := agentnet.Ensure(ctx, c, p, a, managedLabels(nil))
	if err == nil && !created {
		// The network outlived an earlier incarnation (a plain docker rm).
		// Never reuse it: the CP's janitor may be pruning it right now.
		// Make a fresh one, whose age protects it until the container
		// exists; unless the agent's container still exists, which is the
		// name conflict clawker run reports.
		fullName := auth.AgentFullName(p, a)
		if _, ierr := c.ContainerInspect(ctx, fullName, mobyclient.ContainerInspectOptions{}); ierr == nil {
			return agentnet.Net{}, nil, withCode(ExitUsage, fmt.Errorf("an agent container named %s already exists: remove it with clawker rm %s (or docker rm -f %s)", fullName, a, fullName))
		} else if !cerrdefs.IsNotFound(ierr) {
			return agentnet.Net{}, nil, fmt.Errorf("inspect %s: %w", fullName, ierr)
		}
		// By ID: a remove by name could hit a same-named network made
		// since (Docker 20.10 allows duplicates without CheckDuplicate).
		if err = agentnet.Remove(ctx, c, n.ID); err == nil {
			n, created, err = agentnet.Ensure(ctx, c, p, a, managedLabels(nil))
		}
	}
	if errors.Is(err, agentnet.ErrNotAgentNet) {
		return agentnet.Net{}, nil, withCode(ExitError, fmt.Errorf("%w: clawker did not create it; remove it (docker network rm %s) or pick another agent name", err, agentnet.Name(p, a)))
	}
	if err != nil {
		return agentnet.Net{}, nil, withCode(ExitError, fmt.Errorf("agent network %s: %w", agentnet.Name(p, a), err))
	}
	undo := func() {
		if created {
			_ = agentnet.Remove(context.WithoutCancel(ctx), c, n.ID)
		}
	}
	cp, err := c.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		// No CP yet is fine (cp up attaches it later); a CP from before the
		// holder would never reach this agent.
		if _, ierr := c.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{}); ierr == nil {
			undo()
			return agentnet.Net{}, nil, withCode(ExitUnavailable, fmt.Errorf("the control plane is older than %s: run clawker cp up", consts.ControlPlaneNetContainer))
		}
		return n, undo, nil
	case err != nil:
		undo()
		return agentnet.Net{}, nil, fmt.Errorf("inspect %s: %w", consts.ControlPlaneNetContainer, err)
	}
	if cpOn(cp.Container.NetworkSettings, n) {
		return n, undo, nil
	}
	if err := agentnet.ConnectCP(ctx, c, n); err != nil {
		undo()
		return agentnet.Net{}, nil, err
	}
	return n, undo, nil
}

// cpOn reports whether the CP already has its pinned endpoint on n.
func cpOn(ns *container.NetworkSettings, n agentnet.Net) bool {
	if ns == nil {
		return false
	}
	ep := ns.Networks[n.Name]
	return ep != nil && ep.IPAMConfig != nil && ep.IPAMConfig.IPv4Address == n.CPAddr()
}

// connectCPToAgentNets attaches the CP's network holder to every agent
// network at its pinned address, so the CP reaches the agents that outlived
// an earlier one. A network that refuses is reported and skipped: one broken
// agent must not keep the CP down.
func connectCPToAgentNets(ctx context.Context, c netDocker, holderID string, warn func(error)) error {
	nets, err := agentnet.List(ctx, c)
	if err != nil {
		return err
	}
	if len(nets) == 0 {
		return nil
	}
	cp, err := c.ContainerInspect(ctx, holderID, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect %s: %w", consts.ControlPlaneNetContainer, err)
	}
	for _, n := range nets {
		if cpOn(cp.Container.NetworkSettings, n) {
			continue
		}
		if err := agentnet.ConnectCP(ctx, c, n); err != nil {
			warn(err)
		}
	}
	return nil
}

// removeAgentNet removes the agent network of a removed agent container
// (derived from its labels); the CP janitor prunes any this misses.
func removeAgentNet(ctx context.Context, c agentnet.Docker, labels map[string]string) error {
	name, ok := agentnet.NameFromLabels(labels)
	if !ok {
		return nil
	}
	return agentnet.Remove(ctx, c, name)
}

// warnf prints a non-fatal problem on stderr.
func (a *app) warnf(err error) {
	fmt.Fprintf(a.errOut, "clawker: warning: %v\n", err)
}
