package agentenv

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

func TestEnv(t *testing.T) {
	cp := netip.MustParseAddr("10.213.0.2")
	env := map[string]string{}
	for _, kv := range Env(cp) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		if env[k] != "http://10.213.0.2:3128" {
			t.Errorf("%s=%q", k, env[k])
		}
	}
	// clawkerd dials the CP directly: its address must bypass the proxy.
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		if !strings.Contains(","+env[k]+",", ",10.213.0.2,") || !strings.Contains(","+env[k]+",", ","+consts.ControlPlaneContainer+",") {
			t.Errorf("%s=%q lacks the CP address", k, env[k])
		}
	}
	if env["NODE_EXTRA_CA_CERTS"] != consts.EgressCAPath || env["CLAWKER_EGRESS_CA"] != consts.EgressCAPath {
		t.Errorf("NODE_EXTRA_CA_CERTS=%q CLAWKER_EGRESS_CA=%q", env["NODE_EXTRA_CA_CERTS"], env["CLAWKER_EGRESS_CA"])
	}
}
