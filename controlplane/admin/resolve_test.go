package admin

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
)

// A full container ID resolves with point lookups (no registry Snapshot)
// to exactly what the scan finds, for a registered agent, a live one
// without a row, and one with both.
func TestResolveFullIDIsAPointLookup(t *testing.T) {
	bus := overseer.New(nil)
	now := time.Now()
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idA, AgentName: "alpha", Project: "web",
		Session: overseer.SessionStatusConnected, Trusted: true, Init: overseer.InitStatusCompleted}, at: now})
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idC, AgentName: "gamma", Project: "",
		Session: overseer.SessionStatusConnecting}, at: now})
	waitAgent(t, bus, idC)
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha"), entry(t, idB, "", "beta")}}
	fast := newServer(t, reg, bus, nil, nil)
	scan := newServer(t, scanOnly{reg}, bus, nil, nil)
	for _, id := range []string{idA, idB, idC} {
		ref := &adminv1.AgentRef{ContainerId: id}
		before := reg.snapshots
		got, err := fast.resolve(ref)
		if err != nil {
			t.Fatalf("%s: %v", id[:4], err)
		}
		if reg.snapshots != before {
			t.Errorf("%s: full-ID resolve took a registry Snapshot", id[:4])
		}
		want, err := scan.resolve(ref)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s: point lookup %v, scan %v", id[:4], got, want)
		}
	}
	if got, _ := fast.resolve(&adminv1.AgentRef{ContainerId: idA}); !got.GetTrusted() || !got.GetRegistered() || !got.GetLive() {
		t.Errorf("merged row lost its halves: %v", got)
	}
	unknown := "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	if _, err := fast.resolve(&adminv1.AgentRef{ContainerId: unknown}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown full ID: want NotFound, got %v", err)
	}
	broken := newServer(t, &fakeRegistry{err: errors.New("disk on fire")}, bus, nil, nil)
	if _, err := broken.resolve(&adminv1.AgentRef{ContainerId: idA}); status.Code(err) != codes.Unavailable {
		t.Errorf("unreadable registry: want Unavailable, got %v", err)
	}
}

// The scan keeps a row's own name: a worldview entry for a container
// whose registry row does not match is not matched on its own.
func TestResolveByNameUsesTheRowsName(t *testing.T) {
	bus := overseer.New(nil)
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idA, AgentName: "other", Project: "web"}, at: time.Now()})
	waitAgent(t, bus, idA)
	s := newServer(t, &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha")}}, bus, nil, nil)
	if _, err := s.resolve(&adminv1.AgentRef{Agent: "other", Project: "web"}); status.Code(err) != codes.NotFound {
		t.Errorf("matched on the worldview's name over the row's: %v", err)
	}
	if a, err := s.resolve(&adminv1.AgentRef{Agent: "alpha", Project: "web"}); err != nil || a.GetContainerId() != idA || !a.GetLive() {
		t.Errorf("by row name: %v %v", a, err)
	}
}

func waitAgent(t *testing.T, bus *overseer.Overseer, id string) {
	t.Helper()
	waitUntil(t, 5*time.Second, "agent "+id[:4]+" never reached the worldview", func() bool {
		_, ok := bus.Agent(id)
		return ok
	})
}

// One live agent by name resolves without a registry scan, to what the
// scan finds; of two live containers carrying one name, only the one with
// a registry row is found by it.
func TestResolveLiveNameSkipsTheScan(t *testing.T) {
	bus := overseer.New(nil)
	now := time.Now()
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idA, AgentName: "alpha", Project: "web",
		Session: overseer.SessionStatusConnected, Trusted: true}, at: now})
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idB, AgentName: "twin", Project: "web"}, at: now})
	bus.Publish(stateEvent{a: overseer.AgentState{ContainerID: idC, AgentName: "twin", Project: "web"}, at: now})
	for _, id := range []string{idA, idB, idC} {
		waitAgent(t, bus, id)
	}
	reg := &fakeRegistry{rows: []agent.Entry{entry(t, idA, "web", "alpha"), entry(t, idB, "web", "twin")}}
	fast := newServer(t, reg, bus, nil, nil)
	scan := newServer(t, scanOnly{reg}, bus, nil, nil)
	ref := &adminv1.AgentRef{Agent: "alpha", Project: "web"}
	got, err := fast.resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	if reg.snapshots != 0 {
		t.Errorf("live name resolve took %d registry Snapshots", reg.snapshots)
	}
	want, err := scan.resolve(ref)
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("fast %v, scan %v (%v)", got, want, err)
	}
	if a, err := fast.resolve(&adminv1.AgentRef{Agent: "twin", Project: "web"}); err != nil || a.GetContainerId() != idB {
		t.Errorf("two live containers by one name, one row: want the row's %s, got %v %v", idB[:4], a, err)
	}
	// Registry-only agents are still found, by the scan.
	reg.rows = append(reg.rows, entry(t, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "", "ghost"))
	if a, err := fast.resolve(&adminv1.AgentRef{Agent: "ghost"}); err != nil || a.GetLive() || !a.GetRegistered() {
		t.Errorf("registry-only agent: %v %v", a, err)
	}
}
