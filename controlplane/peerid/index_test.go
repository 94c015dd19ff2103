package peerid

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// fakeContainer is one container in fakeDocker.
type fakeContainer struct {
	id      string
	ip      string // agent-network IP; "" = not attached
	net     string // network holding ip; "" = its own agent network
	running bool
	labels  map[string]string
}

// fakeDocker is a DockerClient that counts calls, so tests can assert
// the lookup's Docker API cost.
type fakeDocker struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	inspectErr map[string]error
	listErr    error
	// gate holds an inspect of the keyed container until closed.
	gate map[string]chan struct{}
	// listGate, when set, holds a list after it has read the containers
	// (listed is told so), as a list in flight when one starts.
	listGate, listed chan struct{}

	lists, inspects atomic.Int64
}

func newFakeDocker(cs ...*fakeContainer) *fakeDocker {
	d := &fakeDocker{containers: map[string]*fakeContainer{}, inspectErr: map[string]error{}, gate: map[string]chan struct{}{}}
	for _, c := range cs {
		d.containers[c.id] = c
	}
	return d
}

func agentContainer(n int, ip, project, agent string) *fakeContainer {
	labels := map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: agent}
	if project != "" {
		labels[consts.LabelProject] = project
	}
	return &fakeContainer{id: testContainerID(n), ip: ip, running: true, labels: labels}
}

func (d *fakeDocker) set(c *fakeContainer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.containers[c.id] = c
}

func (d *fakeDocker) remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.containers, id)
}

// nets puts the container's IP on its own agent network (named from its
// labels, as clawker run does); a container whose labels name no agent
// gets a network no agent owns.
func nets(c *fakeContainer) map[string]*network.EndpointSettings {
	if c.ip == "" {
		return map[string]*network.EndpointSettings{}
	}
	name, ok := agentnet.NameFromLabels(c.labels)
	if !ok {
		name = consts.NetworkName
	}
	if c.net != "" {
		name = c.net
	}
	return map[string]*network.EndpointSettings{name: {IPAddress: netip.MustParseAddr(c.ip)}}
}

func (d *fakeDocker) ContainerList(_ context.Context, opts mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error) {
	d.lists.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listErr != nil {
		return mobyclient.ContainerListResult{}, d.listErr
	}
	if !opts.All || !opts.Filters["label"][consts.LabelPurpose+"="+consts.PurposeAgent] {
		return mobyclient.ContainerListResult{}, fmt.Errorf("fake: unexpected list options %+v", opts)
	}
	var out mobyclient.ContainerListResult
	if d.listGate != nil {
		defer func(gate chan struct{}) { d.mu.Unlock(); d.listed <- struct{}{}; <-gate; d.mu.Lock() }(d.listGate)
		d.listGate = nil
	}
	for _, c := range d.containers {
		if c.labels[consts.LabelPurpose] != consts.PurposeAgent {
			continue
		}
		st := container.StateExited
		if c.running {
			st = container.StateRunning
		}
		out.Items = append(out.Items, container.Summary{
			ID: c.id, Labels: c.labels, State: st,
			NetworkSettings: &container.NetworkSettingsSummary{Networks: nets(c)},
		})
	}
	return out, nil
}

func (d *fakeDocker) ContainerInspect(_ context.Context, id string, _ mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	d.inspects.Add(1)
	d.mu.Lock()
	g := d.gate[id]
	d.mu.Unlock()
	if g != nil {
		<-g
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.inspectErr[id]; err != nil {
		return mobyclient.ContainerInspectResult{}, err
	}
	c, ok := d.containers[id]
	if !ok {
		return mobyclient.ContainerInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such container")
	}
	return mobyclient.ContainerInspectResult{Container: container.InspectResponse{
		ID:              c.id,
		State:           &container.State{Running: c.running},
		Config:          &container.Config{Labels: c.labels},
		NetworkSettings: &container.NetworkSettings{Networks: nets(c)},
	}}, nil
}

func (d *fakeDocker) calls() (lists, inspects int64) { return d.lists.Load(), d.inspects.Load() }

var _ DockerClient = (*mobyclient.Client)(nil)

func TestPeerLookupResolves(t *testing.T) {
	d := newFakeDocker(agentContainer(1, "10.9.0.2", "proj", "alpha"), agentContainer(2, "10.9.0.3", "", "beta"))
	m := NewIndex(d, logger.Nop())
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.ContainerID != testContainerID(1) || rc.Project.String() != "proj" || rc.AgentName.String() != "alpha" {
		t.Fatalf("resolved %+v", rc)
	}
	rc, err = m.LookupByIP(context.Background(), netip.MustParseAddr("::ffff:10.9.0.3"))
	if err != nil || rc.ContainerID != testContainerID(2) || !rc.Project.IsZero() {
		t.Fatalf("global agent via v4-mapped IP: %+v, %v", rc, err)
	}
}

// TestPeerLookupCost: with an index built once, each lookup costs exactly
// one inspect however many agent containers exist.
func TestPeerLookupCost(t *testing.T) {
	var cs []*fakeContainer
	for i := range 200 {
		cs = append(cs, agentContainer(i, fmt.Sprintf("10.9.%d.%d", i/250, i%250+2), "p", fmt.Sprintf("a%d", i)))
	}
	d := newFakeDocker(cs...)
	m := NewIndex(d, logger.Nop())
	if _, err := m.ListAgentContainerIDs(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := m.LookupByIP(context.Background(), netip.MustParseAddr(cs[i*3].ip)); err != nil {
			t.Fatal(err)
		}
	}
	if lists, inspects := d.calls(); lists != 1 || inspects != 50 {
		t.Fatalf("Docker calls: %d lists, %d inspects; want 1 list, 50 inspects", lists, inspects)
	}
}

// TestPeerLookupStaleIndexNeverGrants: the index says container 1 owns the
// IP but the daemon has since given it to container 2; the answer is the
// daemon's, confirmed by inspect.
func TestPeerLookupStaleIndexNeverGrants(t *testing.T) {
	d := newFakeDocker(agentContainer(1, "10.9.0.2", "p", "victim"))
	m := NewIndex(d, logger.Nop())
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Container 1 dies without an event reaching us; container 2 gets its IP.
	d.remove(testContainerID(1))
	d.set(agentContainer(2, "10.9.0.2", "p", "newcomer"))
	rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.ContainerID != testContainerID(2) || rc.AgentName.String() != "newcomer" {
		t.Fatalf("stale index granted %+v", rc)
	}
	// IP moved to a non-agent state: container 2 stopped.
	c2 := agentContainer(2, "10.9.0.2", "p", "newcomer")
	c2.running = false
	d.set(c2)
	if _, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.0.2")); !errors.Is(err, ErrNoContainerForPeerIP) {
		t.Fatalf("stopped container: %v, want ErrNoContainerForPeerIP", err)
	}
}

func TestPeerLookupObserve(t *testing.T) {
	d := newFakeDocker()
	m := NewIndex(d, logger.Nop())
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.set(agentContainer(1, "10.9.0.7", "p", "a"))
	m.Observe(context.Background(), testContainerID(1), "start")
	l0, i0 := d.calls()
	if _, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.0.7")); err != nil {
		t.Fatal(err)
	}
	if l1, i1 := d.calls(); l1 != l0 || i1 != i0+1 {
		t.Fatalf("after Observe(start), lookup cost %d lists %d inspects; want 0 and 1", l1-l0, i1-i0)
	}
	m.Observe(context.Background(), testContainerID(1), "kill") // e.g. SIGHUP: still running
	m.mu.Lock()
	kept := len(m.byIP)
	m.mu.Unlock()
	if kept != 1 {
		t.Fatal("Observe(kill) dropped a container that may still be running")
	}
	m.Observe(context.Background(), testContainerID(1), "die")
	m.mu.Lock()
	n := len(m.byIP)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("Observe(die) left %d index entries", n)
	}
}

func TestPeerLookupMissResyncsOnce(t *testing.T) {
	d := newFakeDocker()
	m := NewIndex(d, logger.Nop())
	// Container started, its event was missed: one resync list finds it.
	d.set(agentContainer(1, "10.9.0.9", "", "late"))
	rc, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.0.9"))
	if err != nil || rc.AgentName.String() != "late" {
		t.Fatalf("%+v, %v", rc, err)
	}
	l0, _ := d.calls()
	if _, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.9.9")); !errors.Is(err, ErrNoContainerForPeerIP) {
		t.Fatalf("unknown IP: %v", err)
	}
	if l1, _ := d.calls(); l1-l0 != 1 {
		t.Fatalf("unknown IP cost %d lists, want exactly 1", l1-l0)
	}
}

func TestPeerLookupErrors(t *testing.T) {
	noAgentLabel := agentContainer(3, "10.9.0.4", "p", "x")
	delete(noAgentLabel.labels, consts.LabelAgent)
	tests := []struct {
		name  string
		cs    []*fakeContainer
		setup func(d *fakeDocker)
		ip    string
		want  error
		event string
	}{
		{name: "no container", cs: []*fakeContainer{agentContainer(1, "10.9.0.2", "p", "a")}, ip: "10.9.0.99", want: ErrNoContainerForPeerIP, event: "peer_lookup_no_match"},
		{name: "ambiguous", cs: []*fakeContainer{agentContainer(1, "10.9.0.2", "p", "a"), agentContainer(2, "10.9.0.2", "p", "b")}, ip: "10.9.0.2", want: ErrAmbiguousPeerIP, event: "peer_lookup_ambiguous"},
		// Labels that name no agent name no agent network either, so such a
		// container's address never identifies it (TestPeerLookupInvalidLabel
		// covers the label check itself).
		{name: "missing agent label", cs: []*fakeContainer{noAgentLabel}, ip: "10.9.0.4", want: ErrNoContainerForPeerIP, event: "peer_lookup_no_match"},
		{name: "malformed agent label", cs: []*fakeContainer{agentContainer(1, "10.9.0.2", "p", "Bad.Name")}, ip: "10.9.0.2", want: ErrNoContainerForPeerIP, event: "peer_lookup_no_match"},
		{name: "malformed project label", cs: []*fakeContainer{agentContainer(1, "10.9.0.2", "a.b", "a")}, ip: "10.9.0.2", want: ErrNoContainerForPeerIP, event: "peer_lookup_no_match"},
		{name: "inspect fails for the only candidate", cs: []*fakeContainer{agentContainer(1, "10.9.0.2", "p", "a")},
			setup: func(d *fakeDocker) { d.inspectErr[testContainerID(1)] = errors.New("daemon hiccup") }, ip: "10.9.0.2", event: "peer_lookup_failed"},
		{name: "one inspect fails, other is a real no-match", cs: []*fakeContainer{agentContainer(1, "10.9.0.2", "p", "a"), agentContainer(2, "10.9.0.2", "p", "b")},
			setup: func(d *fakeDocker) {
				d.inspectErr[testContainerID(1)] = errors.New("daemon hiccup")
				c := agentContainer(2, "10.9.0.3", "p", "b")
				d.containers[c.id] = c
			}, ip: "10.9.0.2", want: ErrNoContainerForPeerIP, event: "peer_lookup_no_match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDocker(tt.cs...)
			var buf bytes.Buffer
			m := NewIndex(d, logger.New(&buf, "debug", "test"))
			if err := m.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(d)
			}
			_, err := m.LookupByIP(context.Background(), netip.MustParseAddr(tt.ip))
			if err == nil {
				t.Fatal("lookup succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == nil {
				for _, s := range []error{ErrNoContainerForPeerIP, ErrAmbiguousPeerIP, ErrInvalidAgentLabel} {
					if errors.Is(err, s) {
						t.Fatalf("daemon failure reported as %v", s)
					}
				}
			}
			if !strings.Contains(buf.String(), `"event":"`+tt.event+`"`) {
				t.Fatalf("missing event %s in log:\n%s", tt.event, buf.String())
			}
		})
	}
}

func TestListAgentContainerIDsIncludesStopped(t *testing.T) {
	stopped := agentContainer(2, "", "p", "b")
	stopped.running = false
	other := &fakeContainer{id: testContainerID(3), running: true, labels: map[string]string{"x": "y"}}
	d := newFakeDocker(agentContainer(1, "10.9.0.2", "p", "a"), stopped, other)
	m := NewIndex(d, logger.Nop())
	ids, err := m.ListAgentContainerIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, id := range ids {
		got[id] = true
	}
	if len(ids) != 2 || !got[testContainerID(1)] || !got[testContainerID(2)] {
		t.Fatalf("ids = %v", ids)
	}
	d.listErr = errors.New("boom")
	if _, err := m.ListAgentContainerIDs(context.Background()); err == nil {
		t.Fatal("list error swallowed")
	}
}

func TestPeerLookupNilClient(t *testing.T) {
	m := NewIndex(nil, nil)
	if _, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Fatal("nil client lookup succeeded")
	}
	m.Observe(context.Background(), testContainerID(1), "start") // must not panic
	if _, err := m.ListAgentContainerIDs(context.Background()); err == nil {
		t.Fatal("nil client list succeeded")
	}
}

// TestPeerLookupConcurrentMissesCoalesce: a burst of lookups for an
// unindexed IP shares resync lists instead of issuing one each.
func TestPeerLookupConcurrentMissesCoalesce(t *testing.T) {
	d := newFakeDocker(agentContainer(1, "10.9.0.2", "p", "a"))
	m := NewIndex(d, logger.Nop())
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, err := m.LookupByIP(context.Background(), netip.MustParseAddr("10.9.0.2")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// One list, or two when some lookups began after the first list had
	// (that list may predate what they seek): never one per miss.
	if lists, _ := d.calls(); lists < 1 || lists > 2 {
		t.Fatalf("%d lists for 32 concurrent misses; want one shared list (two at most)", lists)
	}
}

// Start dials only running agents, and answers both boot questions from
// one Docker list.
func TestPeerLookupRunningInventory(t *testing.T) {
	stopped := agentContainer(2, "", "p", "b")
	stopped.running = false
	unattached := agentContainer(3, "", "p", "c") // running, not yet on its agent network
	d := newFakeDocker(agentContainer(1, "10.9.0.2", "p", "a"), stopped, unattached)
	m := NewIndex(d, logger.Nop())
	running, err := m.ListRunningAgentContainerIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, id := range running {
		got[id] = true
	}
	if len(running) != 2 || !got[testContainerID(1)] || !got[testContainerID(3)] {
		t.Fatalf("running = %v", running)
	}
	before := d.lists.Load()
	all, running, err := m.AgentContainerInventory(context.Background())
	if err != nil || len(all) != 3 || len(running) != 2 {
		t.Fatalf("inventory = %v %v %v", all, running, err)
	}
	if n := d.lists.Load() - before; n != 1 {
		t.Fatalf("inventory cost %d lists, want 1", n)
	}
	d.listErr = errors.New("boom")
	if _, err := m.ListRunningAgentContainerIDs(context.Background()); err == nil {
		t.Fatal("list error swallowed")
	}
}

// testContainerID returns a deterministic 64-hex container id.
func testContainerID(n int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("container-%d", n)))
	return fmt.Sprintf("%x", sum)
}
