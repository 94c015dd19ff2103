package daemon

import (
	"context"
	"path/filepath"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/egress"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
)

const subEgress = "egress_gateway"

// startEgress runs the egress gateway. Agents' networks are internal, so
// without it they have no egress at all (fail closed); its failure
// degrades only this subsystem. Trust is wired later (setEgressTrust),
// once the admin server's view exists; until then every peer is denied.
func (d *Daemon) startEgress(ctx context.Context, peers egress.PeerLookup, containers egress.ContainerLister, bus *overseer.Overseer, m *metrics, closers *[]func()) *egress.Service {
	if peers == nil {
		d.health.set(subEgress, statusDisabled)
		return nil
	}
	svc, err := egress.Start(ctx, egress.Config{
		DNSAddr: d.cfg.EgressDNSAddr, ProxyAddr: d.cfg.EgressProxyAddr, UpstreamDNS: d.cfg.EgressUpstreamDNS,
		UpstreamCA: []byte(d.cfg.EgressUpstreamCA),
		PolicyDir:  filepath.Join(d.cfg.DataDir, "egress"), StateDB: filepath.Join(d.cfg.DataDir, "egress.db"),
		CACert: d.cfg.path(consts.EgressCAFile), CAKey: d.cfg.path(consts.EgressCAKeyFile),
		Peers: peers, Containers: containers, Bus: bus, Metrics: m.reg, Log: d.log.With("subsystem", "egress"),
	})
	if err != nil {
		d.log.Error().Str("event", "cp_egress_unavailable").Err(err).Msg("egress gateway not started: agents have no egress")
		d.health.set(subEgress, "failed: "+err.Error())
		return nil
	}
	*closers = append(*closers, svc.Close)
	*closers = append(*closers, forgetDestroyedBlocks(ctx, bus, svc))
	d.mu.Lock()
	d.addrs["egress_dns"], d.addrs["egress_proxy"] = svc.Addr("dns"), svc.Addr("proxy")
	d.mu.Unlock()
	d.health.set(subEgress, statusOK)
	return svc
}

// blockForgetter is the gateway's side of a destroyed agent.
type blockForgetter interface {
	Forget(ctx context.Context, containerID string)
}

// forgetDestroyedBlocks drops the egress block of each destroyed agent:
// it can never apply again (Docker does not reuse IDs), and its row would
// otherwise stay in egress.db for good. Returns the unsubscribe.
func forgetDestroyedBlocks(ctx context.Context, bus *overseer.Overseer, g blockForgetter) func() {
	return bus.Subscribe("egress-blocks", isAgentDestroy, func(e overseer.Event) {
		g.Forget(ctx, e.(dockerevents.DockerEvent).ContainerID)
	})
}
