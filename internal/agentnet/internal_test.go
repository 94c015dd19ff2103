package agentnet

import (
	"context"
	"testing"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
)

type createRecorder struct {
	*fakeNets
	opts []mobyclient.NetworkCreateOptions
}

func (c *createRecorder) NetworkCreate(ctx context.Context, name string, o mobyclient.NetworkCreateOptions) (mobyclient.NetworkCreateResult, error) {
	c.opts = append(c.opts, o)
	return c.fakeNets.NetworkCreate(ctx, name, o)
}

// Agent networks have no route out (issue 18): the CP's egress gateway
// is the only way, and no host address to reach host listeners on.
func TestEnsureMakesInternalNetworks(t *testing.T) {
	c := &createRecorder{fakeNets: newFakeNets()}
	p, _ := auth.NewProjectSlug("web")
	a, _ := auth.NewAgentName("dev")
	if _, created, err := Ensure(context.Background(), c, p, a, nil); err != nil || !created {
		t.Fatalf("ensure: %v %v", created, err)
	}
	if len(c.opts) != 1 || !c.opts[0].Internal || c.opts[0].Driver != "bridge" {
		t.Fatalf("create options %+v: want an internal bridge", c.opts)
	}
	if c.opts[0].Options[OptInhibitIPv4] != "true" {
		t.Fatalf("create options %+v: want the bridge without a host address", c.opts[0].Options)
	}
}
