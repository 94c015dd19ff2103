package peerid

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// waitFor polls cond until it holds or a 10 s deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// event is a DockerEvent for c (its labels, as the feeder publishes them).
func event(action string, c *fakeContainer) dockerevents.DockerEvent {
	return dockerevents.DockerEvent{Action: action, ContainerID: c.id, Labels: c.labels}
}

func indexed(m *Index, ip string) []string {
	return m.candidates(netip.MustParseAddr(ip))
}

// TestFollowKeepsIndexInStep: with Follow, the bus's container events keep
// the index current on its own subscription, so a lookup after a start
// costs one inspect and no list; events that cannot give an agent an IP
// cost no inspect; unsubscribing leaves the bus.
func TestFollowKeepsIndexInStep(t *testing.T) {
	ctx := context.Background()
	d := newFakeDocker()
	m := NewIndex(d, logger.Nop())
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	bus := overseer.New(logger.Nop())
	unsub := m.Follow(ctx, bus)

	a := agentContainer(1, "10.9.0.2", "p", "a")
	d.set(a)
	bus.Publish(event(dockerevents.ActionStart, a))
	waitFor(t, "start indexed", func() bool { return slices.Equal(indexed(m, "10.9.0.2"), []string{a.id}) })
	l0, i0 := d.calls()
	if rc, err := m.LookupByIP(ctx, netip.MustParseAddr("10.9.0.2")); err != nil || rc.ContainerID != a.id {
		t.Fatalf("lookup: %+v %v", rc, err)
	}
	if l1, i1 := d.calls(); l1 != l0 || i1 != i0+1 {
		t.Fatalf("lookup after a followed start cost %d lists %d inspects; want 0 and 1", l1-l0, i1-i0)
	}

	// A network disconnect re-inspects: the agent left its network.
	a.ip = ""
	d.set(a)
	bus.Publish(event(dockerevents.ActionNetworkDisconnect, a))
	waitFor(t, "disconnect unindexed", func() bool { return len(indexed(m, "10.9.0.2")) == 0 })
	a.ip = "10.9.0.2"
	d.set(a)
	bus.Publish(event(dockerevents.ActionUnpause, a))
	waitFor(t, "unpause indexed", func() bool { return len(indexed(m, "10.9.0.2")) == 1 })

	// A non-agent start, a kill and a die cost no inspect; the die (in
	// publish order after the others) forgets the agent.
	_, i0 = d.calls()
	other := &fakeContainer{id: testContainerID(9), ip: "10.9.0.9", running: true, labels: map[string]string{"x": "y"}}
	d.set(other)
	bus.Publish(event(dockerevents.ActionStart, other))
	bus.Publish(event(dockerevents.ActionKill, a))
	bus.Publish(event(dockerevents.ActionDie, a))
	waitFor(t, "die unindexed", func() bool { return len(indexed(m, "10.9.0.2")) == 0 })
	if _, i1 := d.calls(); i1 != i0 {
		t.Fatalf("non-agent start, kill and die cost %d inspects, want 0", i1-i0)
	}

	unsub()
	if subs := bus.Stats().Subscribers; slices.Contains(subs, followerName) {
		t.Fatalf("still subscribed after unsubscribe: %v", subs)
	}
}
