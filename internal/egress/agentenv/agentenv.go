// Package agentenv is the environment that points an agent's tools at the
// control plane's egress gateway, on either runtime: the agent has no
// other way out.
package agentenv

import (
	"net/netip"

	"github.com/clawker/clawker/internal/consts"
)

// Env names the proxy at cp (both cases, as curl, Go, Python and Node each
// read one), and NO_PROXY for the CP itself, which clawkerd dials directly
// (gRPC-Go would otherwise tunnel its Session through the proxy).
func Env(cp netip.Addr) []string {
	proxy := "http://" + netip.AddrPortFrom(cp, consts.PortEgressProxy).String()
	// By address and by name: anything in the agent that talks to the CP
	// (clawkerd, tools using the clawker-cp alias) must reach it directly.
	noProxy := "localhost,127.0.0.1,::1," + cp.String() + "," + consts.ControlPlaneContainer
	return []string{
		"HTTP_PROXY=" + proxy, "HTTPS_PROXY=" + proxy, "http_proxy=" + proxy, "https_proxy=" + proxy,
		"NO_PROXY=" + noProxy, "no_proxy=" + noProxy,
		// Node reads extra roots additively; the rest use the system
		// bundle the CA is appended to (egressca.SystemBundles).
		"NODE_EXTRA_CA_CERTS=" + consts.EgressCAPath,
		"CLAWKER_EGRESS_CA=" + consts.EgressCAPath,
	}
}
