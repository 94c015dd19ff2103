package daemon

import (
	"context"
	"path/filepath"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/egress"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/consts"
)

const subEgress = "egress_gateway"

// startEgress runs the egress gateway. Agents' networks are internal, so
// without it they have no egress at all (fail closed); its failure
// degrades only this subsystem. Trust is wired later (setEgressTrust),
// once the admin server's view exists; until then every peer is denied.
func (d *Daemon) startEgress(ctx context.Context, peers *agent.MobyPeerLookup, bus *overseer.Overseer, m *metrics, closers *[]func()) *egress.Service {
	if peers == nil {
		d.health.set(subEgress, statusDisabled)
		return nil
	}
	svc, err := egress.Start(ctx, egress.Config{
		DNSAddr: d.cfg.EgressDNSAddr, ProxyAddr: d.cfg.EgressProxyAddr, UpstreamDNS: d.cfg.EgressUpstreamDNS,
		UpstreamCA: []byte(d.cfg.EgressUpstreamCA),
		PolicyDir:  filepath.Join(d.cfg.DataDir, "egress"), StateDB: filepath.Join(d.cfg.DataDir, "egress.db"),
		CACert: d.cfg.path(consts.EgressCAFile), CAKey: d.cfg.path(consts.EgressCAKeyFile),
		Peers: peers, Bus: bus, Metrics: m.reg, Log: d.log.With("subsystem", "egress"),
	})
	if err != nil {
		d.log.Error().Str("event", "cp_egress_unavailable").Err(err).Msg("egress gateway not started: agents have no egress")
		d.health.set(subEgress, "failed: "+err.Error())
		return nil
	}
	*closers = append(*closers, svc.Close)
	d.mu.Lock()
	d.addrs["egress_dns"], d.addrs["egress_proxy"] = svc.Addr("dns"), svc.Addr("proxy")
	d.mu.Unlock()
	d.health.set(subEgress, statusOK)
	return svc
}
