package daemon

import (
	"context"
	"fmt"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/creds"
	"github.com/clawker/clawker/controlplane/overseer"
)

// startAgents builds the init Executor and the Session Dialer and runs
// agent.Start on the runtime rt (boot reap, dial on start, evict on destroy, and the
// containment policy's re-application from the worldview on every
// reconcile pass when pol is set). The peer index follows the bus by its
// own subscription (see Run), so it is kept current even when this fails.
func (d *Daemon) startAgents(ctx context.Context, k *keys, rt agentRuntime,
	bus *overseer.Overseer, registry agent.Registry, pol *untrustedPolicy, closers *[]func()) {
	log := d.log
	exec, err := agent.NewExecutor(log.With("subsystem", "init"), bus)
	if err != nil {
		// Degrade: Sessions still open (containment stays possible), the
		// dialer logs agent_init_executor_unset per dial.
		log.Error().Str("event", "agent_init_executor_unavailable").Err(err).Msg("init executor not built")
		exec = nil
	}
	broker := creds.New(rt.labels, creds.Sources{SSHAgentSock: d.cfg.SSHAgentSock, GitCredSock: d.cfg.GitCredSock},
		log.With("subsystem", "creds"))
	opts := []agent.DialerOption{agent.WithCredentials(broker)}
	if rt.resolve != nil {
		opts = append(opts, agent.WithResolver(rt.resolve))
	}
	dialer, err := agent.New(log.With("subsystem", "dialer"), rt.inspect, bus, registry, k.certPath, k.keyPath, k.caPool, exec, opts...)
	if err != nil {
		log.Error().Str("event", "agent_dialer_unavailable").Err(err).Msg("dialer not started: agents will not be initialised")
		d.health.set(subDialer, "failed: "+err.Error())
		return
	}
	var worldview []agent.WorldviewConsumer
	if pol != nil { // a nil *untrustedPolicy must not become a non-nil interface
		worldview = append(worldview, pol)
	}
	// Published before Start: its boot dials run at once, and a detach the
	// policy enacts meanwhile must be able to end the Session it cut off.
	d.setDialer(dialer)
	stop, err := agent.Start(ctx, agent.StartDeps{Registry: registry, DockerLister: rt.peers, PeerLookup: rt.peers,
		Inventory: rt.peers, Running: rt.peers, Dialer: dialer, Bus: bus, Log: log.With("subsystem", "agents"), Worldview: worldview})
	if err != nil {
		d.setDialer(nil)
		log.Error().Str("event", "agent_start_failed").Err(err).Msg("agent subsystem not started: agents will not be dialed")
		d.health.set(subDialer, "failed: "+err.Error())
		return
	}
	*closers = append(*closers, stop)
	d.health.set(subDialer, statusOK)
}

func (d *Daemon) setDialer(dl *agent.Dialer) {
	d.mu.Lock()
	d.dialer = dl
	d.mu.Unlock()
}

// agentRuntime is what the agent subsystem asks of the runtime agents
// run on (Docker or Kubernetes).
type agentRuntime struct {
	inspect agent.DockerInspector // Docker: the dialer inspects; nil with resolve
	resolve agent.Resolver        // where a dial goes, when not by inspect
	peers   agentPeers
	labels  creds.LabelSource
}

// agentPeers answers the peer and inventory questions of agent.Start.
type agentPeers interface {
	agent.ContainerByPeerIP
	agent.ContainerLister
	agent.AgentInventory
	agent.RunningAgentLister
}

// dialJoined redials an agent as soon as the CP has joined its network
// (agentNets.joined); ctx bounds the Session, as for every dial. The
// redial (an inspect, then waiting out the old dial) runs off the join
// worker, so it does not hold one of the pass's join slots.
func (d *Daemon) dialJoined(ctx context.Context) func(containerID string) {
	return func(containerID string) {
		d.mu.Lock()
		dialer := d.dialer
		d.mu.Unlock()
		if dialer != nil {
			go d.guard("agent_network_redial", func() {
				dialer.NetworkChanged(ctx, containerID, "control plane joined the agent network")
			})
		}
	}
}

// execer adapts the dialer to the admin API; it answers an error while
// the dialer is not running.
func (d *Daemon) execer() admin.Execer {
	return dialerExecer{d: d}
}

// dockerLabels reads a container's labels for the credential gate.
type dockerLabels struct{ c mobyclient.APIClient }

func (l dockerLabels) ContainerLabels(ctx context.Context, id string) (map[string]string, error) {
	res, err := l.c.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", id, err)
	}
	if res.Container.Config == nil {
		return nil, fmt.Errorf("inspect %s: no config", id)
	}
	return res.Container.Config.Labels, nil
}
