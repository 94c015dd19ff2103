package peerid

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// TestAmbiguousPeerIPFailsClosedWhenOneOwnerIsUnindexed (issue 15 §5): two
// containers hold IP X and only one is in the index. The lookup must not
// grant the indexed one: the index knows it may be incomplete and lists
// before answering, which finds both.
func TestAmbiguousPeerIPFailsClosedWhenOneOwnerIsUnindexed(t *testing.T) {
	const x = "10.9.0.2"
	for _, tc := range []struct {
		name string
		// unindex leaves m holding a (indexed) and not b (which holds x too).
		unindex func(t *testing.T, d *fakeDocker, m *Index, a, b *fakeContainer) (cleanup func())
	}{
		{"index never listed", func(t *testing.T, d *fakeDocker, m *Index, a, b *fakeContainer) func() {
			d.set(a)
			m.Observe(context.Background(), a.id, dockerevents.ActionStart)
			d.set(b)
			return func() {}
		}},
		{"bus dropped the event", func(t *testing.T, d *fakeDocker, m *Index, a, b *fakeContainer) func() {
			d.set(a)
			if err := m.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			bus := overseer.New(logger.Nop(), overseer.WithSubscriberBuffer(1))
			unsub := m.Follow(context.Background(), bus)
			// The follower is held in an inspect of c, so b's start waits
			// in its one-slot buffer or is dropped.
			c := agentContainer(3, "10.9.0.3", "p", "c")
			hold := make(chan struct{})
			d.mu.Lock()
			d.gate[c.id] = hold
			d.mu.Unlock()
			d.set(c)
			d.set(b)
			bus.Publish(event(dockerevents.ActionStart, c))
			for bus.Drops()[followerName] == 0 {
				bus.Publish(event(dockerevents.ActionStart, b))
			}
			return func() { close(hold); unsub() }
		}},
		{"inspect on the event failed", func(t *testing.T, d *fakeDocker, m *Index, a, b *fakeContainer) func() {
			d.set(a)
			if err := m.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			d.set(b)
			d.mu.Lock()
			d.inspectErr[b.id] = errors.New("daemon hiccup")
			d.mu.Unlock()
			m.Observe(context.Background(), b.id, dockerevents.ActionStart)
			d.mu.Lock()
			delete(d.inspectErr, b.id)
			d.mu.Unlock()
			return func() {}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDocker()
			m := NewIndex(d, logger.Nop())
			a, b := agentContainer(1, x, "p", "a"), agentContainer(2, x, "p", "b")
			defer tc.unindex(t, d, m, a, b)()
			if got := indexed(m, x); !slices.Equal(got, []string{a.id}) {
				t.Fatalf("setup: index holds %v for %s, want only a", got, x)
			}
			rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr(x))
			if !errors.Is(err, ErrAmbiguousPeerIP) {
				t.Fatalf("lookup = %+v, %v; want ErrAmbiguousPeerIP", rc, err)
			}
			// Once b is gone the IP is a's again.
			d.remove(b.id)
			m.Observe(context.Background(), b.id, dockerevents.ActionDestroy)
			if rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr(x)); err != nil || rc.ContainerID != a.id {
				t.Fatalf("after b left: %+v, %v", rc, err)
			}
		})
	}
}

// TestIncompleteIndexWithoutListFailsClosed: an index that may be missing
// a container and cannot list answers with an error, never with the
// candidate it happens to hold.
func TestIncompleteIndexWithoutListFailsClosed(t *testing.T) {
	a := agentContainer(1, "10.9.0.2", "p", "a")
	d := newFakeDocker(a)
	m := NewIndex(d, logger.Nop())
	m.Observe(context.Background(), a.id, dockerevents.ActionStart)
	d.listErr = errors.New("daemon unreachable")
	rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.0.2"))
	if err == nil {
		t.Fatalf("incomplete index granted %+v without a list", rc)
	}
	for _, s := range []error{ErrNoContainerForPeerIP, ErrAmbiguousPeerIP, ErrInvalidAgentLabel} {
		if errors.Is(err, s) {
			t.Fatalf("daemon failure reported as %v", s)
		}
	}
}
