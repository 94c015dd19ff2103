package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// gatedNetDocker is fakeNetDocker whose joins block until released and
// count how many are in flight at once; fail makes a network's joins fail
// while it holds a count.
type gatedNetDocker struct {
	*fakeNetDocker
	gate     chan struct{} // closed: joins proceed
	inflight int
	peak     int
	calls    int
	reached  chan struct{} // closed when peak first reaches want
	want     int
	fail     map[string]int
}

func (g *gatedNetDocker) NetworkConnect(ctx context.Context, id string, o mobyclient.NetworkConnectOptions) (mobyclient.NetworkConnectResult, error) {
	g.mu.Lock()
	g.calls++
	g.inflight++
	if g.inflight > g.peak {
		g.peak = g.inflight
		if g.peak == g.want {
			close(g.reached)
		}
	}
	g.mu.Unlock()
	defer func() { g.mu.Lock(); g.inflight--; g.mu.Unlock() }()
	select {
	case <-g.gate:
	case <-ctx.Done():
		return mobyclient.NetworkConnectResult{}, ctx.Err()
	}
	g.mu.Lock()
	if g.fail[id] > 0 {
		g.fail[id]--
		g.mu.Unlock()
		return mobyclient.NetworkConnectResult{}, errors.New("daemon busy")
	}
	g.cpOn = append(g.cpOn, id) // a fake network's ID is its name
	g.mu.Unlock()
	return g.fakeNetDocker.NetworkConnect(ctx, id, o)
}

func (g *gatedNetDocker) ContainerInspect(ctx context.Context, id string, o mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fakeNetDocker.ContainerInspect(ctx, id, o)
}

func newGated(f *fakeNetDocker, want int) *gatedNetDocker {
	return &gatedNetDocker{fakeNetDocker: f, gate: make(chan struct{}), reached: make(chan struct{}), want: want, fail: map[string]int{}}
}

// liveAgents makes n agent networks and a running agent container on each.
func liveAgents(n int) *fakeNetDocker {
	f := &fakeNetDocker{cpOn: []string{consts.NetworkName}}
	old := time.Now().Add(-time.Hour)
	for i := range n {
		agent := fmt.Sprintf("a%03d", i)
		f.nets = append(f.nets, agentNetSummary("fan", agent, subnetN(i), old))
		f.agents = append(f.agents, container.Summary{ID: "ctr-" + agent, State: container.StateRunning,
			Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelProject: "fan", consts.LabelAgent: agent}})
	}
	return f
}

func subnetN(i int) string { return fmt.Sprintf("10.213.%d.%d/28", i/16, i%16*16) }

// TestAgentNetsJoinsConcurrentlyBounded: a recreated CP joins its agents'
// networks agentNetJoinWorkers at a time, never more, and joins all of
// them. Serial joins cost a 200-agent CP restart tens of seconds.
func TestAgentNetsJoinsConcurrentlyBounded(t *testing.T) {
	const n = 3 * agentNetJoinWorkers
	g := newGated(liveAgents(n), agentNetJoinWorkers)
	a := newAgentNets(context.Background(), g, logger.New(&logger.SyncBuffer{}, "debug", "test"))
	done := make(chan bool)
	go func() { done <- a.reconcile() }()
	select {
	case <-g.reached:
	case <-time.After(10 * time.Second):
		g.mu.Lock()
		defer g.mu.Unlock()
		t.Fatalf("joins never overlapped %d-wide (peak %d)", agentNetJoinWorkers, g.peak)
	}
	close(g.gate)
	if settled := <-done; !settled {
		t.Fatal("pass with every join succeeding reported unsettled")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.peak != agentNetJoinWorkers {
		t.Fatalf("peak concurrent joins %d, want %d", g.peak, agentNetJoinWorkers)
	}
	if len(g.connected) != n {
		t.Fatalf("joined %d networks, want %d", len(g.connected), n)
	}
}

// TestAgentNetsDialsEachAgentOnJoin: the running agent of each network the
// CP joins is handed to joined (to be dialed at once), the stopped one and
// the agent whose network the CP was already on are not, nor is the agent
// whose join failed.
func TestAgentNetsDialsEachAgentOnJoin(t *testing.T) {
	f := liveAgents(4)
	f.agents[1].State = container.StateExited
	f.cpOn = append(f.cpOn, f.nets[2].Name)
	g := newGated(f, -1)
	close(g.gate)
	g.fail[f.nets[3].ID] = 1
	var buf logger.SyncBuffer
	a := newAgentNets(context.Background(), g, logger.New(&buf, "debug", "test"))
	var mu sync.Mutex
	var dialed []string
	a.joined = func(id string) { mu.Lock(); dialed = append(dialed, id); mu.Unlock() }
	if a.reconcile() {
		t.Fatal("pass with a failed join reported settled")
	}
	if want := []string{f.agents[0].ID}; !slices.Equal(dialed, want) {
		t.Fatalf("dialed %v, want %v", dialed, want)
	}
	if !strings.Contains(buf.String(), `"event":"agent_network_cp_connect_failed"`) {
		t.Fatalf("failed join not logged:\n%s", buf.String())
	}
}

// TestAgentNetsRetriesFailedJoin: a pass whose join failed runs again by
// itself (no agent destroy need kick it), so the CP ends up on every live
// agent's network.
func TestAgentNetsRetriesFailedJoin(t *testing.T) {
	f := liveAgents(2)
	g := newGated(f, -1)
	close(g.gate)
	g.fail[f.nets[1].ID] = 2
	ctx, cancel := context.WithCancel(context.Background())
	a := newAgentNets(ctx, g, logger.New(&logger.SyncBuffer{}, "debug", "test"))
	a.retry = time.Millisecond
	dialed := make(chan string, 4)
	a.joined = func(id string) { dialed <- id }
	stopped := make(chan struct{})
	go func() { defer close(stopped); a.run() }()
	defer func() { cancel(); <-stopped }()
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case id := <-dialed:
			got = append(got, id)
		case <-timeout:
			t.Fatalf("dialed %v: the failed join was never retried", got)
		}
	}
	if want := []string{f.agents[0].ID, f.agents[1].ID}; !slices.Equal(got, want) {
		t.Fatalf("dialed %v, want %v (each agent once, the retried one after)", got, want)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail[f.nets[1].ID] != 0 {
		t.Fatalf("%d failures left: retried too few times", g.fail[f.nets[1].ID])
	}
}

// TestAgentNetsJoinHasItsOwnBudget: a join queued behind slow ones gets
// its own time, not what is left of the pass's: with the pass's budget
// spent while every join waits on Docker, all of them still succeed.
func TestAgentNetsJoinHasItsOwnBudget(t *testing.T) {
	const n = 2 * agentNetJoinWorkers
	g := newGated(liveAgents(n), agentNetJoinWorkers)
	a := newAgentNets(context.Background(), g, logger.New(&logger.SyncBuffer{}, "debug", "test"))
	a.passTimeout = time.Nanosecond // spent before the first join starts
	done := make(chan bool)
	go func() { done <- a.reconcile() }()
	select {
	case <-g.reached:
	case settled := <-done:
		t.Fatalf("the pass ended (settled %v) before its joins could overlap: they ran on its spent budget", settled)
	}
	close(g.gate)
	if settled := <-done; !settled {
		t.Fatal("joins failed for the pass's spent budget")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.connected) != n {
		t.Fatalf("joined %d networks, want %d", len(g.connected), n)
	}
}

// TestAgentNetsJoinStopsOnShutdown: a CP shutting down starts no more
// joins, and the pass ends (unsettled) once the joins in flight end.
func TestAgentNetsJoinStopsOnShutdown(t *testing.T) {
	const n = 3 * agentNetJoinWorkers
	g := newGated(liveAgents(n), agentNetJoinWorkers)
	ctx, cancel := context.WithCancel(context.Background())
	a := newAgentNets(ctx, g, logger.New(&logger.SyncBuffer{}, "debug", "test"))
	done := make(chan bool)
	go func() { done <- a.reconcile() }()
	<-g.reached
	cancel() // the gated joins end with ctx.Err()
	select {
	case settled := <-done:
		if settled {
			t.Fatal("a pass cut by shutdown reported settled")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pass did not end on shutdown")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.connected) != 0 || g.calls >= n {
		t.Fatalf("after shutdown: %d joined, %d of %d joins started", len(g.connected), g.calls, n)
	}
}

// TestAgentNetsJoinQueueBounded: a pass stops starting joins once it has
// queued them for agentNetJoinQueueMax (a hung dockerd), and reports
// unsettled so the next pass retries the rest.
func TestAgentNetsJoinQueueBounded(t *testing.T) {
	const n = 3 * agentNetJoinWorkers
	g := newGated(liveAgents(n), 1)
	a := newAgentNets(context.Background(), g, logger.New(&logger.SyncBuffer{}, "debug", "test"))
	base := time.Now()
	a.now = func() time.Time {
		select {
		case <-g.reached: // a join is in flight: the queue time is spent
			return base.Add(agentNetJoinQueueMax + time.Second)
		default:
			return base
		}
	}
	done := make(chan bool)
	go func() { done <- a.reconcile() }()
	<-g.reached
	close(g.gate)
	if settled := <-done; settled {
		t.Fatal("a pass that left joins unstarted reported settled")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.calls > agentNetJoinWorkers {
		t.Fatalf("%d of %d joins started after the queue time ran out", g.calls, n)
	}
}
