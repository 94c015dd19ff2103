package agent

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/clawker/clawker/controlplane/dockerevents"
)

// capsLister implements every optional capability and counts each call, so
// a test can tell which one Start used.
type capsLister struct {
	all, running, inventory atomic.Int64
}

func (c *capsLister) ListAgentContainerIDs(context.Context) ([]string, error) {
	c.all.Add(1)
	return nil, nil
}

func (c *capsLister) ListRunningAgentContainerIDs(context.Context) ([]string, error) {
	c.running.Add(1)
	return nil, nil
}

func (c *capsLister) AgentContainerInventory(context.Context) (all, running []string, err error) {
	c.inventory.Add(1)
	return nil, nil, nil
}

func capsDeps(env *dtEnv, l *capsLister, peers *fakePeerLookup) StartDeps {
	return StartDeps{Registry: env.reg, DockerLister: l, PeerLookup: peers, Dialer: env.dialer, Bus: env.bus,
		ReconcileInterval: -1}
}

// Capabilities are what the wiring passes, never what DockerLister happens
// to implement: unwired, only the plain list runs.
func TestStartUsesOnlyWiredCapabilities(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		wire                    func(*StartDeps, *capsLister)
		all, running, inventory int64
	}{
		{"none", func(*StartDeps, *capsLister) {}, 1, 0, 0},
		{"running", func(d *StartDeps, l *capsLister) { d.Running = l }, 1, 1, 0},
		{"inventory", func(d *StartDeps, l *capsLister) { d.Inventory = l; d.Running = l }, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newDTEnv(t, nil)
			l := &capsLister{}
			d := capsDeps(env, l, &fakePeerLookup{})
			tc.wire(&d, l)
			cleanup, err := Start(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			cleanup()
			if l.all.Load() != tc.all || l.running.Load() != tc.running || l.inventory.Load() != tc.inventory {
				t.Fatalf("calls all=%d running=%d inventory=%d, want %d/%d/%d", l.all.Load(), l.running.Load(),
					l.inventory.Load(), tc.all, tc.running, tc.inventory)
			}
		})
	}
}

// Start never feeds the peer index, even a PeerLookup that could take the
// events: the index follows the bus by its own subscription (peerid.Follow),
// so a start's dial never waits on the index's inspect.
func TestStartNeverFeedsThePeerLookup(t *testing.T) {
	env := newDTEnv(t, nil)
	lookup := &fakePeerLookup{}
	d := capsDeps(env, &capsLister{}, lookup)
	cleanup, err := Start(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	a, _ := env.agent(t, f)
	addRow(t, env.reg, a, f.leaf)
	gone := dtContainerID(t)
	addRow(t, env.reg, gone, env.pki.agentLeaf(t, "proj", "dev", gone))
	env.bus.Publish(agentEvent(dockerevents.ActionDestroy, gone))
	env.bus.Publish(agentEvent(dockerevents.ActionStart, a))
	env.rec.wait(t, a, EventSessionConnected)
	dtWait(t, "destroy handled", func() bool {
		_, err := env.reg.LookupByContainerID(gone)
		return errors.Is(err, ErrUnknownAgent)
	})
	lookup.mu.Lock()
	defer lookup.mu.Unlock()
	if len(lookup.observed) != 0 {
		t.Fatalf("Start fed the peer lookup: %v", lookup.observed)
	}
}
