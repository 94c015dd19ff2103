package peerid

import (
	"context"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
)

// followerName is Follow's subscriber name on the bus (and its key in
// the bus's drop counts).
const followerName = "peer-index"

// Follow keeps the index in step with the container events on bus, on a
// subscriber of its own: its inspects delay no other subsystem (a start's
// dial runs beside them, not after). A delivery the bus drops marks the
// index incomplete, so the next lookup lists before it answers. The
// returned func unsubscribes.
func (m *Index) Follow(ctx context.Context, bus *overseer.Overseer) (unsubscribe func()) {
	drops := func() uint64 { return bus.Drops()[followerName] }
	m.drops.Store(&drops)
	unsub := bus.Subscribe(followerName, indexable, func(e overseer.Event) {
		d := e.(dockerevents.DockerEvent)
		m.Observe(ctx, d.ContainerID, d.Action)
	})
	return func() {
		unsub()
		m.drops.Store(nil)
	}
}

// indexable selects the events Observe acts on: any container leaving
// (cheap), and an agent container starting or changing networks (one
// inspect each).
func indexable(e overseer.Event) bool {
	d, ok := e.(dockerevents.DockerEvent)
	if !ok {
		return false
	}
	switch d.Action {
	case dockerevents.ActionDie, dockerevents.ActionDestroy:
		return true
	case dockerevents.ActionStart, dockerevents.ActionRestart, dockerevents.ActionUnpause,
		dockerevents.ActionNetworkConnect, dockerevents.ActionNetworkDisconnect:
		return d.IsAgent()
	}
	return false
}
