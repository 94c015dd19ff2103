package peerid

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/clawker/clawker/internal/logger"
)

// A lookup for a container that started while a list was in flight must
// not settle for that list: it predates the container. It used to, and
// the token endpoint refused an honest agent started amid 19 others.
func TestPeerLookupDoesNotCoalesceOntoAnOlderList(t *testing.T) {
	d := newFakeDocker()
	m := NewIndex(d, logger.Nop())
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	d.mu.Lock()
	d.listGate, d.listed = gate, make(chan struct{}, 1)
	d.mu.Unlock()
	inFlight := make(chan error, 1)
	go func() { inFlight <- m.Refresh(context.Background()) }()
	<-d.listed // the list has read the containers: x is not among them

	x := agentContainer(7, "10.9.0.7", "p", "x")
	d.set(x)
	// The lookup reads its generation before it asks whether the index
	// is complete (misses); only then may the old list end.
	asked := make(chan struct{})
	var once sync.Once
	drops := func() uint64 { once.Do(func() { close(asked) }); return 0 }
	m.drops.Store(&drops)
	got := make(chan error, 1)
	go func() {
		rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr(x.ip))
		if err == nil && rc.ContainerID != x.id {
			err = fmt.Errorf("resolved %s", rc.ContainerID)
		}
		got <- err
	}()
	<-asked
	close(gate)
	if err := <-inFlight; err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("lookup of a container newer than the list in flight: %v", err)
	}
}
