package dockerevents

import (
	"context"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
)

func netMsg(action events.Action, netName, containerID string) events.Message {
	now := time.Now()
	return events.Message{Type: events.NetworkEventType, Action: action,
		Actor: events.Actor{ID: "net-" + netName, Attributes: map[string]string{"container": containerID, "name": netName, "type": "bridge"}},
		Time:  now.Unix(), TimeNano: now.UnixNano()}
}

// With WithNetworkEvents, a network connect/disconnect of an agent the
// feed knows is published as that container's event, whatever the
// network is called; one of a container outside the scope is not, and a
// break of the network stream reconnects the feed like a container
// stream break.
func TestFeederNetworkEvents(t *testing.T) {
	api := newFakeAPI()
	api.set("agent1", container.StateRunning)
	bus := &collector{}
	f, err := New(api, bus, nil, AgentLabel(), WithNetworkEvents(), WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = f.Run(ctx) }()
	waitOpened(t, api)
	waitOpened(t, api)
	waitFor(t, "connected", func() bool { return f.Health().Connected })
	api.mu.Lock()
	nets := api.streams[1]
	api.mu.Unlock()

	nets.msgs <- netMsg(events.ActionDisconnect, "any-agent-net", "agent1")
	nets.msgs <- netMsg(events.ActionConnect, "other", "stranger")
	nets.msgs <- netMsg(events.ActionConnect, "clawker-net", "agent1")
	waitFor(t, "agent1 connect", func() bool { return bus.find(ActionNetworkConnect, "agent1", false) })
	if !bus.find(ActionNetworkDisconnect, "agent1", false) {
		t.Fatalf("no disconnect for agent1: %+v", bus.snapshot())
	}
	for _, e := range bus.snapshot() {
		if e.ContainerID == "stranger" {
			t.Fatalf("event for a container outside the scope: %+v", e)
		}
		if e.ContainerID == "agent1" && (!e.IsAgent() || e.Labels["network"] == "") {
			t.Fatalf("network event lacks the agent's labels or the network: %+v", e)
		}
	}
	if e := bus.snapshot()[0]; e.Labels["network"] != "any-agent-net" {
		t.Fatalf("network label %q", e.Labels["network"])
	}

	nets.errs <- context.DeadlineExceeded
	waitOpened(t, api)
	waitOpened(t, api)
	waitFor(t, "reconnected", func() bool { return f.Health().Connected && f.Health().Reconnects == 1 })
}
