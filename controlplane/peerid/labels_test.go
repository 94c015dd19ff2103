package peerid

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

// TestPeerLookupOnlyTheAgentsOwnNetworkCounts: a container wearing an
// agent's labels whose address is on clawker-net, or on another agent's
// network, is not that agent; only the endpoint on its own agent network
// identifies it (issue 13 §4).
func TestPeerLookupOnlyTheAgentsOwnNetworkCounts(t *testing.T) {
	for _, netName := range []string{consts.NetworkName, agentnet.NameOf("p", "bob")} {
		t.Run(netName, func(t *testing.T) {
			squatter := agentContainer(1, "10.213.0.3", "p", "alice")
			squatter.net = netName
			m := NewIndex(newFakeDocker(squatter), nil)
			_, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.213.0.3"))
			if !errors.Is(err, ErrNoContainerForPeerIP) {
				t.Fatalf("address on %s resolved: %v", netName, err)
			}
			// Control: the same container on its own network is alice.
			squatter.net = ""
			rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.213.0.3"))
			if err != nil || rc.AgentName.String() != "alice" {
				t.Fatalf("own network: %+v %v", rc, err)
			}
		})
	}
}
