package daemon

import (
	"context"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
)

// startAgents builds the init Executor and the Session Dialer and runs
// agent.Start (boot reap, dial on start, evict on destroy, peer-index
// upkeep). It reports whether the agent axis is running.
func (d *Daemon) startAgents(ctx context.Context, k *keys, docker mobyclient.APIClient, peers *agent.MobyPeerLookup,
	bus *overseer.Overseer, registry agent.Registry, closers *[]func()) (started bool) {
	log := d.log
	exec, err := agent.NewExecutor(log.With("subsystem", "init"), bus)
	if err != nil {
		// Degrade: Sessions still open (containment stays possible), the
		// dialer logs agent_init_executor_unset per dial.
		log.Error().Str("event", "agent_init_executor_unavailable").Err(err).Msg("init executor not built")
		exec = nil
	}
	dialer, err := agent.New(log.With("subsystem", "dialer"), docker, bus, registry, k.certPath, k.keyPath, k.caPool, exec)
	if err != nil {
		log.Error().Str("event", "agent_dialer_unavailable").Err(err).Msg("dialer not started: agents will not be initialised")
		d.health.set(subDialer, "failed: "+err.Error())
		return false
	}
	stop, err := agent.Start(ctx, agent.StartDeps{Registry: registry, DockerLister: peers, PeerLookup: peers,
		Dialer: dialer, Bus: bus, Log: log.With("subsystem", "agents")})
	if err != nil {
		log.Error().Str("event", "agent_start_failed").Err(err).Msg("agent subsystem not started: agents will not be dialed")
		d.health.set(subDialer, "failed: "+err.Error())
		return false
	}
	d.mu.Lock()
	d.dialer = dialer
	d.mu.Unlock()
	*closers = append(*closers, stop)
	d.health.set(subDialer, statusOK)
	return true
}

// execer adapts the dialer to the admin API; it answers an error while
// the dialer is not running.
func (d *Daemon) execer() admin.Execer {
	return dialerExecer{d: d}
}
