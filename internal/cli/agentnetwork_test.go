package cli

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// vanishingNets serves one orphaned agent network that disappears the
// moment the CP is attached to it (the janitor won the race), then lets a
// fresh one be created and attached.
type vanishingNets struct {
	mu       sync.Mutex
	orphan   *network.Network
	created  []string
	connects int
	removed  int
	targets  []string // what each NetworkRemove named
	oldCP    bool     // a CP from before the holder, and no holder
}

func (v *vanishingNets) NetworkInspect(_ context.Context, name string, _ mobyclient.NetworkInspectOptions) (mobyclient.NetworkInspectResult, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.orphan == nil {
		return mobyclient.NetworkInspectResult{}, cerrdefs.ErrNotFound
	}
	return mobyclient.NetworkInspectResult{Network: network.Inspect{Network: *v.orphan}}, nil
}

func (v *vanishingNets) NetworkList(context.Context, mobyclient.NetworkListOptions) (mobyclient.NetworkListResult, error) {
	return mobyclient.NetworkListResult{}, nil
}

func (v *vanishingNets) NetworkCreate(_ context.Context, name string, o mobyclient.NetworkCreateOptions) (mobyclient.NetworkCreateResult, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.created = append(v.created, name)
	return mobyclient.NetworkCreateResult{ID: "fresh"}, nil
}

func (v *vanishingNets) ContainerInspect(_ context.Context, name string, _ mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	want := consts.ControlPlaneNetContainer
	if v.oldCP {
		want = consts.ControlPlaneContainer
	}
	if name != want {
		return mobyclient.ContainerInspectResult{}, cerrdefs.ErrNotFound // the agent's container is gone
	}
	return mobyclient.ContainerInspectResult{Container: container.InspectResponse{NetworkSettings: &container.NetworkSettings{}}}, nil
}

func (v *vanishingNets) NetworkDisconnect(context.Context, string, mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error) {
	return mobyclient.NetworkDisconnectResult{}, nil
}

func (v *vanishingNets) NetworkRemove(_ context.Context, name string, _ mobyclient.NetworkRemoveOptions) (mobyclient.NetworkRemoveResult, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.removed++
	v.targets = append(v.targets, name)
	v.orphan = nil
	return mobyclient.NetworkRemoveResult{}, nil
}

func (v *vanishingNets) NetworkConnect(_ context.Context, id string, _ mobyclient.NetworkConnectOptions) (mobyclient.NetworkConnectResult, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.connects++
	if id == "orphan" {
		v.orphan = nil // removed under us
		return mobyclient.NetworkConnectResult{}, cerrdefs.ErrNotFound.WithMessage("network orphan not found")
	}
	return mobyclient.NetworkConnectResult{}, nil
}

// TestPrepareAgentNetNeverReusesAnOrphan: the churn soak saw `clawker run`
// fail when the orphaned network of an earlier incarnation (left by a plain
// docker rm) was pruned by the CP's janitor while run was reusing it. run
// now replaces an orphan with a fresh network (which the janitor's grace
// protects), and retries if a network vanishes under it anyway.
func TestPrepareAgentNetNeverReusesAnOrphan(t *testing.T) {
	p, _ := auth.NewProjectSlug("churn")
	a, _ := auth.NewAgentName("w08")
	v := &vanishingNets{orphan: &network.Network{Name: agentnet.Name(p, a), ID: "orphan", Labels: agentnet.Labels(p, a),
		IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: netip.MustParsePrefix("10.213.0.16/28")}}}}}
	n, undo, err := prepareAgentNet(context.Background(), v, p, a)
	if err != nil {
		t.Fatalf("prepareAgentNet: %v", err)
	}
	if n.ID != "fresh" || len(v.created) != 1 || v.removed != 1 || v.connects != 1 || undo == nil {
		t.Fatalf("net %+v created %v removed %d connects %d", n, v.created, v.removed, v.connects)
	}
	// Removals name the network by ID: by name they could hit a same-named
	// network made since (Docker 20.10 allows duplicate names).
	undo()
	if want := []string{"orphan", "fresh"}; len(v.targets) != 2 || v.targets[0] != want[0] || v.targets[1] != want[1] {
		t.Fatalf("removed %v, want %v", v.targets, want)
	}
}

// A CP from before the holder owns its endpoints and would never join a new
// agent's network: run refuses until cp up replaces it, and leaves no
// network behind.
func TestPrepareAgentNetRefusesACPWithoutHolder(t *testing.T) {
	p, _ := auth.NewProjectSlug("up")
	a, _ := auth.NewAgentName("grade")
	v := &vanishingNets{oldCP: true}
	_, _, err := prepareAgentNet(context.Background(), v, p, a)
	if exitCode(err) != ExitUnavailable || !strings.Contains(err.Error(), "cp up") {
		t.Fatalf("err %v (exit %d), want ExitUnavailable naming cp up", err, exitCode(err))
	}
	if len(v.created) != 1 || v.removed != 1 || v.connects != 0 {
		t.Fatalf("created %v removed %d connects %d: the fresh network must go again", v.created, v.removed, v.connects)
	}
}
