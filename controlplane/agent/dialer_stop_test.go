package agent

import (
	"context"
	"testing"

	"github.com/clawker/clawker/controlplane/overseer"
)

// TestPeerCloseOfStoppingContainerIsSessionClosed: docker stop makes
// clawkerd end its Sessions just before the container dies and before the
// die event reaches CancelDial. Once the resolver says the container is
// not running, that end is a teardown (SessionClosed), not SessionBroken.
func TestPeerCloseOfStoppingContainerIsSessionClosed(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, closeAfterInit: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	env.targets.fail(id, ErrContainerNotRunning)
	c := env.rec.wait(t, id, EventSessionClosed).(SessionClosed)
	if c.Reason != "container stopped" || env.rec.has(id, EventSessionBroken) {
		t.Fatalf("closed = %+v events %v", c, env.rec.names(id))
	}
	dtWait(t, "entry removed", func() bool { return len(env.dialer.Sessions()) == 0 })
	if a, _ := env.bus.Agent(id); a.Session != overseer.SessionStatusClosed {
		t.Fatalf("worldview session = %s", a.Session)
	}
}
