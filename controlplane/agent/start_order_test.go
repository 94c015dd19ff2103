package agent

import (
	"context"
	"net/netip"
	"testing"

	"github.com/clawker/clawker/controlplane/dockerevents"
)

// gatedPeerLookup's Observe (a Docker inspect in production) does not
// return until release is closed.
type gatedPeerLookup struct {
	fakePeerLookup
	release chan struct{}
}

func (g *gatedPeerLookup) LookupByIP(ctx context.Context, ip netip.Addr) (ResolvedContainer, error) {
	return g.fakePeerLookup.LookupByIP(ctx, ip)
}

func (g *gatedPeerLookup) Observe(ctx context.Context, id, action string) {
	<-g.release
	g.fakePeerLookup.Observe(ctx, id, action)
}

// TestStartEventDialsBeforeIndexing: on a start event the dial begins
// without waiting for the peer-index update (a Docker inspect), so a slow
// daemon does not delay the Session. With the index update first, the
// dial would never start while Observe is held and the wait fails.
func TestStartEventDialsBeforeIndexing(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	peers := &gatedPeerLookup{release: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(peers.release)
		}
	}
	cleanup, err := Start(context.Background(), StartDeps{Registry: env.reg, DockerLister: &fakeLister{},
		PeerLookup: peers, Dialer: env.dialer, Bus: env.bus, ReconcileInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	defer release() // before cleanup: it waits for the held handler
	env.bus.Publish(agentEvent(dockerevents.ActionStart, id))
	env.rec.wait(t, id, EventSessionConnected)
	release()
	dtWait(t, "index fed after the dial", func() bool {
		peers.mu.Lock()
		defer peers.mu.Unlock()
		return len(peers.observed) == 1 && peers.observed[0] == dockerevents.ActionStart+"/"+id
	})
}
