package cli

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/egress/egressca"
)

func TestEgressEnv(t *testing.T) {
	cp := netip.MustParseAddr("10.213.0.2")
	env := map[string]string{}
	for _, kv := range egressEnv(cp) {
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
	if env["NODE_EXTRA_CA_CERTS"] != consts.EgressCAPath {
		t.Errorf("NODE_EXTRA_CA_CERTS=%q", env["NODE_EXTRA_CA_CERTS"])
	}
}

// The interception CA is made once per home, its key private, and a
// second call keeps it (agents already trust it).
func TestEnsureEgressCA(t *testing.T) {
	h := auth.Home{Dir: t.TempDir()}
	if err := ensureEgressCA(h); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(h.Path(consts.EgressCAFile))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(h.Path(consts.EgressCAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v %v", fi, err)
	}
	key, _ := os.ReadFile(h.Path(consts.EgressCAKeyFile))
	if _, err := egressca.LoadCA(first, key); err != nil {
		t.Fatalf("written CA does not load: %v", err)
	}
	if err := ensureEgressCA(h); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(h.Path(consts.EgressCAFile)); string(again) != string(first) {
		t.Fatal("a second call replaced the CA")
	}
	if err := h.CheckPerms(); err != nil {
		t.Fatalf("home perms: %v", err)
	}
}
