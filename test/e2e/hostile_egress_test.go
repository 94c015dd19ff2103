package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

// Issue 18: the egress gateway's attribution gate. Containers the CP has
// not proven get no egress, whatever their labels or network; the
// gateway's refusal is its one generic 403 (or REFUSED for DNS), the
// reason only in the CP log (event egress_denied).

// egressOutcome turns a fakenet client line into a matrix outcome.
func egressOutcome(name, out string, ok bool) outcome {
	o := outcome{Attack: name, Mode: "egress", OK: ok, Stage: "http", Message: out}
	switch {
	case strings.Contains(out, "status 403"):
		o.HTTPStatus = 403
	case strings.Contains(out, "REFUSED"):
		o.Stage, o.Code = "dns", "REFUSED"
	default:
		o.Stage = "transport"
	}
	return o
}

func refusedEgress(stage string) func(outcome) error {
	return func(o outcome) error {
		if o.OK || o.Stage != stage {
			return fmt.Errorf("want an egress refusal at %s, got %s", stage, o)
		}
		return nil
	}
}

// egressAttacks are the egress rows of the matrix: stranger has joined
// alice's network (no agent labels); an impostor carries agent labels of
// a project agent the CP never registered, pinned on that agent's own
// network, which clawker would have made.
func egressAttacks(t *testing.T, e *env, project, alice, stranger string) []hostileAttack {
	t.Helper()
	bin := buildFakenet(t)
	imp := startHostile(t, "clawker-e2e-egress-imp", map[string]string{consts.LabelPurpose: consts.PurposeAgent,
		consts.LabelProject: project, consts.LabelAgent: "egress-imp"})
	impNet := joinAgentNet(t, imp, project, "egress-imp", true)
	for _, id := range []string{stranger, imp} {
		plantFakenet(t, id, bin, nil)
	}
	aliceCP := cpAddrOn(t, project, "alice")
	via := func(from string, args ...string) func(string) outcome {
		return func(name string) outcome {
			out, ok := fakenet(t, from, args...)
			return egressOutcome(name, out, ok)
		}
	}
	proxy := func(cp netip.Addr) string { return netip.AddrPortFrom(cp, consts.PortEgressProxy).String() }
	layer := "(egress gateway attribution)"
	return []hostileAttack{
		{name: "egress-stranger-on-agent-net-connect", surface: "egress", from: "stranger", event: "egress_denied", layer: layer,
			run: via(stranger, "connect", "-proxy", proxy(aliceCP), "-target", "github.com:443"), want: refusedEgress("http")},
		{name: "egress-stranger-on-agent-net-dns", surface: "egress", from: "stranger", event: "egress_denied", layer: layer,
			run: via(stranger, "dns", "-server", netip.AddrPortFrom(aliceCP, consts.PortEgressDNS).String(), "github.com"), want: refusedEgress("dns")},
		{name: "egress-impostor-agent-labels-connect", surface: "egress", from: "egress-imp", event: "egress_denied", layer: layer,
			run: via(imp, "connect", "-proxy", proxy(impNet.CPAddr()), "-target", "github.com:443"), want: refusedEgress("http")},
	}
}
