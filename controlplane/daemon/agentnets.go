package daemon

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// agentNetDocker is what the agent-network janitor needs from Docker.
type agentNetDocker interface {
	agentnet.Docker
	ContainerList(ctx context.Context, options mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error)
	ContainerInspect(ctx context.Context, containerID string, options mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error)
}

// agentNetGrace spares a network younger than this whose agent container
// does not exist yet: clawker run creates the network just before the
// container.
const agentNetGrace = 30 * time.Second

// agentNetOrphanGrace is how old a network with no container must be
// before it is removed when this CP saw no destroy of its agent (orphaned
// while the CP was down). A destroy proves the run that made the network
// is over; without one, a run whose container create is slow under load
// (the long crash soak saw over 30 s) may still be in flight.
const agentNetOrphanGrace = 10 * time.Minute

// agentNetJoinWorkers bounds the CP's concurrent joins of agent networks.
// dockerd serialises most of each join; overlapping them still gains
// about 1.5x on Docker 20.10, flat past 4 (bench/FINDINGS.md).
const agentNetJoinWorkers = 8

// agentNetJoinTimeout bounds one join (one Docker network connect);
// agentNetJoinQueueMax bounds how long one pass keeps starting joins, so
// a hung dockerd cannot hold the pass (and its retries) for N/8 timeouts.
const (
	agentNetJoinTimeout  = 30 * time.Second
	agentNetJoinQueueMax = 5 * time.Minute
)

// agentNetRetry is how soon a pass that left the CP off a live agent's
// network (a join failed or the pass timed out) runs again; the wait
// doubles up to agentNetRetryMax while passes keep failing.
const (
	agentNetRetry    = 5 * time.Second
	agentNetRetryMax = time.Minute
)

// agentNets keeps the per-agent networks in step with the agents: at CP
// start and after each agent destroy it removes networks whose agent
// container is gone (a plain docker rm leaves them, and Docker's address
// space is finite), and re-attaches the CP at its pinned address to the
// networks of agents that still exist (a CP recreated while a clawker run
// was in flight). Runs coalesce like the clawkerd volume janitor's.
type agentNets struct {
	docker agentNetDocker
	log    *logger.Logger
	ctx    context.Context
	now    func() time.Time
	kick   chan struct{}
	retry  time.Duration
	// passTimeout bounds one pass's listings and prunes, joinTimeout
	// each join (volumePruneTimeout and agentNetJoinTimeout; tests shorten).
	passTimeout, joinTimeout time.Duration
	// joined is told each running agent container whose network the CP
	// just joined, so its Session is dialed now: an attempt made before
	// the join left from the wrong source address and waits out its
	// handshake timeout. nil: no one is told.
	joined func(containerID string)

	mu        sync.Mutex
	destroyed map[string]time.Time // agent network name -> last destroy seen of its agent
}

func newAgentNets(ctx context.Context, docker agentNetDocker, log *logger.Logger) *agentNets {
	return &agentNets{docker: docker, log: log, ctx: ctx, now: time.Now, kick: make(chan struct{}, 1),
		retry: agentNetRetry, passTimeout: volumePruneTimeout, joinTimeout: agentNetJoinTimeout, destroyed: map[string]time.Time{}}
}

func (a *agentNets) handle(ev overseer.Event) {
	if d, ok := ev.(dockerevents.DockerEvent); ok {
		if n, ok := agentnet.NameFromLabels(d.Labels); ok {
			a.mu.Lock()
			a.destroyed[n] = a.now()
			a.mu.Unlock()
		}
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// orphaned reports whether a network with no agent container may go: its
// agent was destroyed after the network was made, or it is long orphaned.
func (a *agentNets) orphaned(n string, created, asOf time.Time) bool {
	age := asOf.Sub(created)
	if age < agentNetGrace {
		return false
	}
	a.mu.Lock()
	at, seen := a.destroyed[n]
	a.mu.Unlock()
	return (seen && at.After(created)) || age >= agentNetOrphanGrace
}

// forget drops destroy records of networks that no longer exist, so the
// map stays as small as the set of agent networks.
func (a *agentNets) forget(exists map[string]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for n := range a.destroyed {
		if !exists[n] {
			delete(a.destroyed, n)
		}
	}
}

func (a *agentNets) run() {
	settled := a.reconcile()
	wait := a.retry
	retry := time.NewTimer(wait)
	defer retry.Stop()
	for {
		retry.Stop()
		var again <-chan time.Time
		if settled {
			wait = a.retry
		} else {
			retry.Reset(wait)
			again = retry.C
			wait = min(2*wait, max(a.retry, agentNetRetryMax))
		}
		select {
		case <-a.ctx.Done():
			return
		case <-a.kick:
		case <-again:
		}
		settled = a.reconcile()
	}
}

// reconcile does one pass; every failure is logged and the next pass
// retries. settled is false when the pass may have left the CP off a live
// agent's network, so run schedules another without waiting for a kick.
func (a *agentNets) reconcile() (settled bool) {
	ctx, cancel := context.WithTimeout(a.ctx, a.passTimeout)
	defer cancel()
	// Ages are judged as of before the listings: a pass slowed by Docker
	// (a network delete took tens of seconds in the churn soak) must not
	// call a network old whose container was created after the container
	// list was taken (that removed a fresh agent's network under clawker
	// run between its container create and start).
	asOf := a.now()
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+agentnet.Purpose, consts.LabelManaged+"=true")
	nets, err := a.docker.NetworkList(ctx, mobyclient.NetworkListOptions{Filters: f})
	if err != nil {
		a.log.Warn().Str("event", "agent_network_prune_failed").Err(err).Msg("agent networks not reconciled")
		return false
	}
	exists := map[string]bool{}
	for _, n := range nets.Items {
		exists[n.Name] = true
	}
	a.forget(exists)
	if len(nets.Items) == 0 {
		return true
	}
	ctrs, err := a.docker.ContainerList(ctx, mobyclient.ContainerListOptions{
		All:     true,
		Filters: make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent),
	})
	if err != nil {
		a.log.Warn().Str("event", "agent_network_prune_failed").Err(err).Msg("agent networks not reconciled")
		return false
	}
	live := map[string][]string{} // agent network -> its agent's running containers (empty: none running)
	for _, c := range ctrs.Items {
		if n, ok := agentnet.NameFromLabels(c.Labels); ok {
			ids := live[n]
			if c.State == container.StateRunning {
				ids = append(ids, c.ID)
			}
			live[n] = ids
		}
	}
	var joins []agentnet.Net
	var orphans []network.Summary
	for _, n := range nets.Items {
		if _, ok := live[n.Name]; !ok {
			orphans = append(orphans, n)
		} else if net, ok := agentnet.Parse(n.Network); ok {
			joins = append(joins, net)
		}
	}
	settled = true
	if len(joins) > 0 {
		settled = a.joinAll(ctx, joins, live)
	}
	// Its own budget: the joins may have outlasted the pass's.
	pctx, pcancel := context.WithTimeout(a.ctx, a.passTimeout)
	defer pcancel()
	a.prune(pctx, orphans, asOf)
	return settled
}

// joinAll attaches the CP to each of nets it is not on yet, at most
// agentNetJoinWorkers at a time: a recreated CP joins every agent network
// and its agents wait for theirs. ok is false if a join failed.
func (a *agentNets) joinAll(ctx context.Context, nets []agentnet.Net, live map[string][]string) (ok bool) {
	cpNets, err := a.cpNetworks(ctx)
	if err != nil {
		a.log.Warn().Str("event", "agent_network_prune_failed").Err(err).Msg("CP endpoints unknown: agent networks not reattached")
		return false
	}
	var failed atomic.Bool
	queueUntil := a.now().Add(agentNetJoinQueueMax)
	sem := make(chan struct{}, agentNetJoinWorkers) // sem is the pass's own: a slot taken at a stop needs no release
	var wg sync.WaitGroup
	for _, n := range nets {
		if cpNets[n.Name] {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-a.ctx.Done():
		}
		// Shutdown, or a pass queuing joins past agentNetJoinQueueMax (a
		// hung dockerd): start no more; the next pass retries.
		if a.ctx.Err() != nil || a.now().After(queueUntil) {
			failed.Store(true)
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// Each join its own budget: the pass's would let the last of
			// 200 queued joins fail for time spent waiting on the others.
			jctx, cancel := context.WithTimeout(a.ctx, a.joinTimeout)
			defer cancel()
			if !a.join(jctx, n, live[n.Name]) {
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	return !failed.Load()
}

// join attaches the CP to n and tells joined about the agent's running
// containers; a panic is logged (the daemon's guard does not cover this
// goroutine) and counts as a failure.
func (a *agentNets) join(ctx context.Context, n agentnet.Net, running []string) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			a.log.Error().Str("event", "agent_network_join_panic").Str("network", n.Name).Interface("panic", r).Msg("recovered")
			ok = false
		}
	}()
	if err := agentnet.ConnectCP(ctx, a.docker, n); err != nil {
		a.log.Warn().Str("event", "agent_network_cp_connect_failed").Str("network", n.Name).Err(err).Msg("CP not attached to an agent network")
		return false
	}
	a.log.Info().Str("event", "agent_network_cp_connected").Str("network", n.Name).Msg("CP attached to an agent network")
	if a.joined != nil {
		for _, id := range running {
			a.joined(id)
		}
	}
	return true
}

// prune removes the networks whose agent container is gone, sparing those
// orphaned only by a clawker run still in flight.
func (a *agentNets) prune(ctx context.Context, orphans []network.Summary, asOf time.Time) {
	var removed []string
	for _, n := range orphans {
		if !a.orphaned(n.Name, n.Created, asOf) || a.agentExists(ctx, n.Name) {
			continue
		}
		if err := agentnet.Remove(ctx, a.docker, n.ID); err != nil {
			a.log.Warn().Str("event", "agent_network_prune_failed").Str("network", n.Name).Err(err).Msg("orphaned agent network not removed")
			continue
		}
		removed = append(removed, n.Name)
	}
	if len(removed) > 0 {
		a.log.Info().Str("event", "agent_networks_pruned").Int("count", len(removed)).Strs("networks", removed).Msg("orphaned agent networks removed")
	}
}

// agentExists re-checks, just before a removal, whether a container of the
// network's agent exists by now (clawker run may have created it since the
// pass's listing); an error counts as existing, so the network is spared.
func (a *agentNets) agentExists(ctx context.Context, netName string) bool {
	ctrs, err := a.docker.ContainerList(ctx, mobyclient.ContainerListOptions{
		All:     true,
		Filters: make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent),
	})
	if err != nil {
		return true
	}
	for _, c := range ctrs.Items {
		if n, ok := agentnet.NameFromLabels(c.Labels); ok && n == netName {
			return true
		}
	}
	return false
}

// cpNetworks lists the networks the CP's namespace has an endpoint on:
// those of the holder container the CP shares it with.
func (a *agentNets) cpNetworks(ctx context.Context) (map[string]bool, error) {
	res, err := a.docker.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	if res.Container.NetworkSettings != nil {
		for name := range res.Container.NetworkSettings.Networks {
			out[name] = true
		}
	}
	return out, nil
}
