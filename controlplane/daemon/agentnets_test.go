package daemon

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// fakeNetDocker holds agent networks, agent containers and the CP's
// endpoints, and records removals and connects.
type fakeNetDocker struct {
	mobyclient.APIClient // unexpected calls panic
	mu                   sync.Mutex
	nets                 []network.Summary
	agents               []container.Summary
	cpOn                 []string
	removed, connected   []string
}

func (f *fakeNetDocker) NetworkList(context.Context, mobyclient.NetworkListOptions) (mobyclient.NetworkListResult, error) {
	return mobyclient.NetworkListResult{Items: f.nets}, nil
}

func (f *fakeNetDocker) ContainerList(context.Context, mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error) {
	return mobyclient.ContainerListResult{Items: f.agents}, nil
}

// ContainerInspect answers for the holder of the CP's namespace alone: the
// CP container has no endpoint of its own.
func (f *fakeNetDocker) ContainerInspect(_ context.Context, name string, _ mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	if name != consts.ControlPlaneNetContainer {
		return mobyclient.ContainerInspectResult{}, cerrdefs.ErrNotFound
	}
	eps := map[string]*network.EndpointSettings{}
	for _, n := range f.cpOn {
		eps[n] = &network.EndpointSettings{}
	}
	return mobyclient.ContainerInspectResult{Container: container.InspectResponse{NetworkSettings: &container.NetworkSettings{Networks: eps}}}, nil
}

func (f *fakeNetDocker) NetworkConnect(_ context.Context, id string, o mobyclient.NetworkConnectOptions) (mobyclient.NetworkConnectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connected = append(f.connected, id+"@"+o.EndpointConfig.IPAMConfig.IPv4Address.String())
	return mobyclient.NetworkConnectResult{}, nil
}

func (f *fakeNetDocker) NetworkDisconnect(context.Context, string, mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error) {
	return mobyclient.NetworkDisconnectResult{}, nil
}

func (f *fakeNetDocker) NetworkRemove(_ context.Context, id string, _ mobyclient.NetworkRemoveOptions) (mobyclient.NetworkRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	return mobyclient.NetworkRemoveResult{}, nil
}

func agentNetSummary(project, agent, subnet string, created time.Time) network.Summary {
	name := agentnet.NameOf(project, agent)
	return network.Summary{Network: network.Network{Name: name, ID: name, Created: created,
		IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: netip.MustParsePrefix(subnet)}}}}}
}

// TestAgentNetsPrunesOrphansAndReattachesCP: a network whose agent is gone
// is removed (unless it is younger than the grace: clawker run is about to
// create its container); the CP is attached at its pinned .2 to a live
// agent's network it is missing from, and left alone where it is.
func TestAgentNetsPrunesOrphansAndReattachesCP(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	f := &fakeNetDocker{
		nets: []network.Summary{
			agentNetSummary("web", "gone", "10.213.0.0/28", old),
			agentNetSummary("web", "starting", "10.213.0.16/28", now.Add(-time.Second)),
			agentNetSummary("web", "live", "10.213.0.32/28", old),
			agentNetSummary("", "attached", "10.213.0.48/28", old),
		},
		agents: []container.Summary{
			{Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelProject: "web", consts.LabelAgent: "live"}},
			{Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: "attached"}},
		},
		cpOn: []string{consts.NetworkName, agentnet.NameOf("", "attached")},
	}
	var buf bytes.Buffer
	a := newAgentNets(context.Background(), f, logger.New(&buf, "debug", "test"))
	a.now = func() time.Time { return now }
	a.reconcile()
	if want := []string{agentnet.NameOf("web", "gone")}; !slices.Equal(f.removed, want) {
		t.Fatalf("removed %v, want %v", f.removed, want)
	}
	if want := []string{agentnet.NameOf("web", "live") + "@10.213.0.34"}; !slices.Equal(f.connected, want) {
		t.Fatalf("connected %v, want %v", f.connected, want)
	}
	for _, ev := range []string{"agent_networks_pruned", "agent_network_cp_connected"} {
		if !strings.Contains(buf.String(), `"event":"`+ev+`"`) {
			t.Fatalf("log lacks %s:\n%s", ev, buf.String())
		}
	}
}

// racingNetDocker is fakeNetDocker where time passes during the container
// listing and clawker run creates its agent's container after the first
// listing, as under a slow Docker in the churn soak.
type racingNetDocker struct {
	*fakeNetDocker
	lists  int
	onList func(call int)
}

func (r *racingNetDocker) ContainerList(ctx context.Context, o mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error) {
	res, err := r.fakeNetDocker.ContainerList(ctx, o)
	r.lists++
	r.onList(r.lists)
	return res, err
}

// TestAgentNetsSparesNetworkOfAgentCreatedDuringPass: the two races that
// removed a fresh agent's network between clawker run's container create
// and start. (1) The grace is judged as of before the listings, not after
// a slow container listing; (2) a container that appears after the listing
// is seen by the re-check just before the removal.
func TestAgentNetsSparesNetworkOfAgentCreatedDuringPass(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	agent := container.Summary{Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelProject: "churn", consts.LabelAgent: "w03"}}
	for _, tc := range []struct {
		name    string
		created time.Time
	}{
		{"young at listing, old after a slow listing", start.Add(-25 * time.Second)},
		{"old, container created after the listing", start.Add(-time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := start
			f := &fakeNetDocker{nets: []network.Summary{agentNetSummary("churn", "w03", "10.213.0.0/28", tc.created)}}
			r := &racingNetDocker{fakeNetDocker: f, onList: func(call int) {
				if call == 1 { // the listing took 10 s; clawker run created its container meanwhile
					now = now.Add(10 * time.Second)
					f.agents = []container.Summary{agent}
				}
			}}
			a := newAgentNets(context.Background(), r, logger.New(&bytes.Buffer{}, "debug", "test"))
			a.now = func() time.Time { return now }
			a.reconcile()
			if len(f.removed) != 0 {
				t.Fatalf("removed %v: the network of an agent being created", f.removed)
			}
		})
	}
}

// TestAgentNetsDestroySeenOrLongOrphaned: a network older than the short
// grace but with no container goes only once this CP saw its agent
// destroyed after the network was made, or once it is long orphaned. The
// long crash soak lost a network to a pass that ran while a slow
// clawker run had not yet created its container.
func TestAgentNetsDestroySeenOrLongOrphaned(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	created := now.Add(-5 * time.Minute)
	destroy := func(at time.Time) overseer.Event {
		return dockerevents.DockerEvent{Action: dockerevents.ActionDestroy, At: at,
			Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelProject: "crash", consts.LabelAgent: "r16-a3"}}
	}
	for _, tc := range []struct {
		name      string
		created   time.Time
		destroyAt time.Time // zero: no destroy seen
		removed   bool
	}{
		{"run in flight: no container, no destroy", created, time.Time{}, false},
		{"destroy seen after the network was made", created, now.Add(-time.Second), true},
		{"destroy seen before a new run made it again", created, created.Add(-time.Second), false},
		{"long orphaned, no destroy seen", now.Add(-agentNetOrphanGrace), time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNetDocker{nets: []network.Summary{agentNetSummary("crash", "r16-a3", "10.213.0.0/28", tc.created)}}
			a := newAgentNets(context.Background(), f, logger.New(&bytes.Buffer{}, "debug", "test"))
			if !tc.destroyAt.IsZero() {
				a.now = func() time.Time { return tc.destroyAt }
				a.handle(destroy(tc.destroyAt))
			}
			a.now = func() time.Time { return now }
			a.reconcile()
			if got := len(f.removed) == 1; got != tc.removed {
				t.Fatalf("removed %v, want removal %v", f.removed, tc.removed)
			}
		})
	}
	// Records of networks that are gone are dropped.
	f := &fakeNetDocker{}
	a := newAgentNets(context.Background(), f, logger.New(&bytes.Buffer{}, "debug", "test"))
	a.handle(destroy(now))
	a.reconcile()
	if len(a.destroyed) != 0 {
		t.Fatalf("destroy records kept for absent networks: %v", a.destroyed)
	}
}
