package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

// netInspector answers NetworkInspect with one network and fails the
// test on any other Docker call (the embedded nil interface panics).
type netInspector struct {
	agentnet.Docker
	labels  map[string]string
	created bool
}

func (n *netInspector) NetworkInspect(context.Context, string, mobyclient.NetworkInspectOptions) (mobyclient.NetworkInspectResult, error) {
	return mobyclient.NetworkInspectResult{Network: network.Inspect{Network: network.Network{Name: consts.NetworkName, Labels: n.labels}}}, nil
}

func (n *netInspector) NetworkCreate(context.Context, string, mobyclient.NetworkCreateOptions) (mobyclient.NetworkCreateResult, error) {
	n.created = true
	return mobyclient.NetworkCreateResult{}, nil
}

// TestEnsureNetworkRefusesForeignClawkerNet: a clawker-net that clawker
// did not create (no managed label) is refused with a clear message.
func TestEnsureNetworkRefusesForeignClawkerNet(t *testing.T) {
	foreign := &netInspector{labels: map[string]string{"com.example": "x"}}
	err := ensureNetwork(context.Background(), foreign)
	if err == nil || !strings.Contains(err.Error(), "clawker did not create it") || !strings.Contains(err.Error(), "docker network rm "+consts.NetworkName) {
		t.Fatalf("foreign clawker-net: %v", err)
	}
	if code := exitCode(err); code != ExitUsage {
		t.Fatalf("exit code %d, want %d", code, ExitUsage)
	}
	ours := &netInspector{labels: map[string]string{consts.LabelManaged: "true"}}
	if err := ensureNetwork(context.Background(), ours); err != nil || ours.created {
		t.Fatalf("managed clawker-net: err %v created %v", err, ours.created)
	}
}
