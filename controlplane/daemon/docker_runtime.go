package daemon

import (
	"context"

	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc"
	"net/http"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/egress"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/controlplane/peerid"
)

// runtimeOut is what starting a runtime hands back to Run: the servers it
// opened, the peer lookup the egress gateway attributes by, and the
// Docker client (nil on Kubernetes).
type runtimeOut struct {
	docker  mobyclient.APIClient
	peers   egress.PeerLookup // nil: no peer lookup, so no egress
	contain admin.Containment // nil: containment unavailable
	grpc    []*grpc.Server
	http    []*http.Server
}

// startDocker runs the Docker runtime: the client and peer index, the
// agent surface, the events feeder, the dialer and the agent volumes and
// networks. Each part degrades alone, reported on /healthz.
func (d *Daemon) startDocker(runCtx context.Context, k *keys, bus *overseer.Overseer, registry agent.Registry,
	feeder **dockerevents.Feeder, closers *[]func()) runtimeOut {
	log := d.log
	var out runtimeOut
	// 3. Docker client and peer lookup.
	docker, err := d.newDocker()
	var peers *peerid.Index
	if err != nil {
		log.Error().Str("event", "cp_docker_unavailable").Err(err).Msg("no Docker client: agents cannot be watched, dialed or verified")
		d.health.set(subDocker, "failed: "+err.Error())
		docker = nil
	} else {
		*closers = append(*closers, func() { docker.Close() })
		d.health.set(subDocker, statusOK)
		peers = peerid.NewIndex(d.peerLookupClient(docker), log.With("subsystem", "peerlookup"))
		// The index follows the bus itself, whichever subsystems come up.
		*closers = append(*closers, peers.Follow(runCtx, bus))
	}

	// 4. token endpoint and 5. agent listener.
	if k != nil && peers != nil {
		if srv, gs := d.serveAgentSurface(k, peers, registry, closers); srv != nil {
			out.http = append(out.http, srv)
			out.grpc = append(out.grpc, gs)
		}
	} else {
		reason := "disabled: needs keys and Docker"
		d.health.set(subToken, reason)
		d.health.set(subAgentAPI, reason)
		log.Warn().Str("event", "cp_agent_surface_disabled").Msg("token endpoint and AgentService not started")
	}

	// 6. Docker events watcher.
	if docker != nil {
		var evOpts []dockerevents.Option
		evOpts = append(evOpts, dockerevents.AgentLabel(), dockerevents.WithNetworkEvents())
		if peers != nil {
			// Events missed while the stream was down may have moved IPs:
			// rebuild the peer index after every reconnect.
			evOpts = append(evOpts, dockerevents.WithReconnectHook(func(ctx context.Context) {
				if err := peers.Refresh(ctx); err != nil {
					log.Warn().Str("event", "peer_lookup_refresh_failed").Err(err).
						Msg("peer index refresh after events reconnect failed; lookups resync on miss")
				}
			}))
		}
		*feeder, err = dockerevents.New(docker, bus, log.With("subsystem", "dockerevents"), evOpts...)
		if err != nil {
			log.Error().Str("event", "cp_docker_events_unavailable").Err(err).Msg("docker events feeder not started")
			d.health.set(subEvents, "failed: "+err.Error())
		} else {
			f := *feeder
			d.health.probe(subEvents, func() string {
				h := f.Health()
				if h.Connected {
					return statusOK
				}
				if h.LastError != "" {
					return "disconnected: " + h.LastError
				}
				return "connecting"
			})
			go d.guard("dockerevents", func() {
				if err := f.Run(runCtx); err != nil && runCtx.Err() == nil {
					log.Error().Str("event", "cp_docker_events_stopped").Err(err).Msg("docker events feeder stopped")
				}
			})
		}
	} else {
		d.health.set(subEvents, "disabled: no Docker client")
	}

	// 7. dialer + init executor + agent.Start.
	var contain admin.Containment
	if docker != nil {
		contain = admin.DockerContainment{C: docker}
	}
	pol := d.startPolicy(runCtx, contain, bus, closers)
	if k != nil && docker != nil {
		d.startAgents(runCtx, k, agentRuntime{inspect: docker, peers: peers, labels: dockerLabels{docker}}, bus, registry, pol, closers)
	} else {
		d.health.set(subDialer, "disabled: needs keys and Docker")
	}

	// Unused clawkerd volumes: pruned at start and after each agent destroy.
	if docker != nil {
		vols := newClawkerdVolumes(runCtx, docker, log.With("subsystem", "volumes"))
		*closers = append(*closers, bus.Subscribe("clawkerd-volumes", isAgentDestroy, vols.handle))
		go d.guard("clawkerd_volumes", vols.run)
		nets := newAgentNets(runCtx, docker, log.With("subsystem", "agentnets"))
		nets.joined = d.dialJoined(runCtx)
		*closers = append(*closers, bus.Subscribe("agent-networks", isAgentDestroy, nets.handle))
		go d.guard("agent_networks", nets.run)
	}

	out.docker, out.contain = docker, contain
	if peers != nil {
		out.peers = peers // never a typed nil: a nil lookup turns egress off
	}
	return out
}
