package agentnet

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// fakeNets is an in-memory Docker network store that refuses overlapping
// subnets the way the engine does.
type fakeNets struct {
	mu          sync.Mutex
	nets        map[string]network.Network
	foreign     []netip.Prefix // held by networks the List does not show (another engine user)
	creates     int
	connects    []string
	disconnects []string
}

func newFakeNets() *fakeNets { return &fakeNets{nets: map[string]network.Network{}} }

func (f *fakeNets) NetworkInspect(_ context.Context, name string, _ mobyclient.NetworkInspectOptions) (mobyclient.NetworkInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[name]
	if !ok {
		return mobyclient.NetworkInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such network")
	}
	return mobyclient.NetworkInspectResult{Network: network.Inspect{Network: n}}, nil
}

func (f *fakeNets) NetworkCreate(_ context.Context, name string, o mobyclient.NetworkCreateOptions) (mobyclient.NetworkCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if _, ok := f.nets[name]; ok {
		return mobyclient.NetworkCreateResult{}, cerrdefs.ErrConflict.WithMessage("network with name " + name + " already exists")
	}
	sub := o.IPAM.Config[0].Subnet
	for _, p := range f.foreign {
		if p.Overlaps(sub) {
			return mobyclient.NetworkCreateResult{}, errors.New("Pool overlaps with other one on this address space")
		}
	}
	for _, n := range f.nets {
		for _, c := range n.IPAM.Config {
			if c.Subnet.Overlaps(sub) {
				return mobyclient.NetworkCreateResult{}, errors.New("Pool overlaps with other one on this address space")
			}
		}
	}
	f.nets[name] = network.Network{Name: name, ID: "id-" + name, Labels: o.Labels, IPAM: *o.IPAM}
	return mobyclient.NetworkCreateResult{ID: "id-" + name}, nil
}

func (f *fakeNets) NetworkList(context.Context, mobyclient.NetworkListOptions) (mobyclient.NetworkListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out mobyclient.NetworkListResult
	for _, n := range f.nets {
		out.Items = append(out.Items, network.Summary{Network: n})
	}
	return out, nil
}

func (f *fakeNets) NetworkConnect(_ context.Context, id string, o mobyclient.NetworkConnectOptions) (mobyclient.NetworkConnectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connects = append(f.connects, id+" "+o.Container+" "+o.EndpointConfig.IPAMConfig.IPv4Address.String()+" "+strings.Join(o.EndpointConfig.Aliases, ","))
	return mobyclient.NetworkConnectResult{}, nil
}

func (f *fakeNets) NetworkDisconnect(_ context.Context, name string, o mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disconnects = append(f.disconnects, name+" "+o.Container)
	return mobyclient.NetworkDisconnectResult{}, nil
}

func (f *fakeNets) NetworkRemove(_ context.Context, name string, _ mobyclient.NetworkRemoveOptions) (mobyclient.NetworkRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nets[name]; !ok {
		return mobyclient.NetworkRemoveResult{}, cerrdefs.ErrNotFound
	}
	delete(f.nets, name)
	return mobyclient.NetworkRemoveResult{}, nil
}

func ident(t *testing.T, p, a string) (auth.ProjectSlug, auth.AgentName) {
	t.Helper()
	ps, err := auth.NewProjectSlug(p)
	if err != nil {
		t.Fatal(err)
	}
	an, err := auth.NewAgentName(a)
	if err != nil {
		t.Fatal(err)
	}
	return ps, an
}

func TestNames(t *testing.T) {
	p, a := ident(t, "web", "alice")
	if got := Name(p, a); got != "clawker-net-agent.web.alice" {
		t.Fatalf("Name = %q", got)
	}
	g, b := ident(t, "", "bob")
	if got := Name(g, b); got != "clawker-net-agent.bob" {
		t.Fatalf("global Name = %q", got)
	}
	if got := NameOf("web", "alice"); got != "clawker-net-agent.web.alice" {
		t.Fatalf("NameOf = %q", got)
	}
	// Every agent network sorts after clawker-net, so the CP's default
	// route and published ports stay there (see NamePrefix).
	for _, n := range []string{Name(p, a), Name(g, b), NamePrefix + "0", NamePrefix + "-"} {
		if n <= consts.NetworkName {
			t.Fatalf("%q sorts before %q", n, consts.NetworkName)
		}
	}
	if got := NameOf("web", "Bad.Name"); got != "" {
		t.Fatalf("NameOf(invalid) = %q, want empty", got)
	}
}

// TestEnsureAllocatesDisjointSubnetsWithPinnedAddresses: every agent gets
// its own /28 of the pool, distinct from every other, labelled, with the
// CP at .2 and the agent at .3; a subnet Docker refuses is skipped.
func TestEnsureAllocatesDisjointSubnetsWithPinnedAddresses(t *testing.T) {
	t.Setenv(EnvPool, "10.77.0.0/24") // 16 subnets
	f := newFakeNets()
	// Someone else holds the first half of the pool, invisible to the list.
	f.foreign = []netip.Prefix{netip.MustParsePrefix("10.77.0.0/25")}
	seen := map[netip.Prefix]bool{}
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		p, a := ident(t, "proj", name)
		n, created, err := Ensure(context.Background(), f, p, a, map[string]string{consts.LabelTest: "unit"})
		if err != nil || !created {
			t.Fatalf("%s: created=%v err=%v", name, created, err)
		}
		if seen[n.Subnet] || !netip.MustParsePrefix("10.77.0.128/25").Contains(n.Subnet.Addr()) || n.Subnet.Bits() != SubnetBits {
			t.Fatalf("%s: subnet %s reused or outside the free half", name, n.Subnet)
		}
		seen[n.Subnet] = true
		base := n.Subnet.Addr().As4()
		if cp, ag := n.CPAddr().As4(), n.AgentAddr().As4(); cp[3] != base[3]+2 || ag[3] != base[3]+3 {
			t.Fatalf("%s: CP %s agent %s in %s", name, n.CPAddr(), n.AgentAddr(), n.Subnet)
		}
		l := f.nets[n.Name].Labels
		if l[consts.LabelManaged] != "true" || l[consts.LabelPurpose] != Purpose || l[consts.LabelAgent] != name || l[consts.LabelProject] != "proj" || l[consts.LabelTest] != "unit" {
			t.Fatalf("%s: labels %v", name, l)
		}
		// Idempotent: the same agent gets the same network back.
		again, created, err := Ensure(context.Background(), f, p, a, nil)
		if err != nil || created || again != n {
			t.Fatalf("%s: second Ensure %+v created=%v err=%v", name, again, created, err)
		}
	}
	// The free half is now used up: a ninth agent fails with advice.
	p, a := ident(t, "proj", "i")
	if _, _, err := Ensure(context.Background(), f, p, a, nil); err == nil || !strings.Contains(err.Error(), EnvPool) {
		t.Fatalf("full pool: %v", err)
	}
}

// TestEnsureRefusesForeignNetwork: a network with the agent network's
// name that clawker did not label is never used.
func TestEnsureRefusesForeignNetwork(t *testing.T) {
	f := newFakeNets()
	p, a := ident(t, "web", "alice")
	sub := netip.MustParsePrefix("10.213.5.0/28")
	f.nets[Name(p, a)] = network.Network{Name: Name(p, a), ID: "x", IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: sub}}}}
	if _, _, err := Ensure(context.Background(), f, p, a, nil); !errors.Is(err, ErrNotAgentNet) {
		t.Fatalf("unlabelled: %v", err)
	}
	// Labelled for another agent: refused too.
	q, b := ident(t, "web", "bob")
	f.nets[Name(p, a)] = network.Network{Name: Name(p, a), ID: "x", Labels: Labels(q, b), IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: sub}}}}
	if _, _, err := Ensure(context.Background(), f, p, a, nil); !errors.Is(err, ErrNotAgentNet) {
		t.Fatalf("other agent's labels: %v", err)
	}
	if f.creates != 0 {
		t.Fatalf("%d creates", f.creates)
	}
}

func TestConnectCPPinsAddress(t *testing.T) {
	f := newFakeNets()
	n := Net{Name: "clawker-net-agent.x", ID: "id-x", Subnet: netip.MustParsePrefix("10.213.0.48/28")}
	if err := ConnectCP(context.Background(), f, n); err != nil {
		t.Fatal(err)
	}
	// The holder joins at .2 and answers to the CP's name there.
	if want := "id-x " + consts.ControlPlaneNetContainer + " 10.213.0.50 " + consts.ControlPlaneContainer; len(f.connects) != 1 || f.connects[0] != want {
		t.Fatalf("connects %v, want %q", f.connects, want)
	}
}

// Remove takes the holder's endpoint off, and that of a CP from before the
// holder, which owned its own.
func TestRemoveDisconnectsTheCP(t *testing.T) {
	f := newFakeNets()
	f.nets["n"] = network.Network{Name: "n", ID: "id-n"}
	if err := Remove(context.Background(), f, "n"); err != nil {
		t.Fatal(err)
	}
	want := []string{"n " + consts.ControlPlaneNetContainer, "n " + consts.ControlPlaneContainer}
	if !slices.Equal(f.disconnects, want) || len(f.nets) != 0 {
		t.Fatalf("disconnects %v, networks left %v", f.disconnects, f.nets)
	}
}

func TestPool(t *testing.T) {
	t.Setenv(EnvPool, "")
	if p, err := Pool(); err != nil || p.String() != DefaultPool {
		t.Fatalf("default: %s %v", p, err)
	}
	for _, bad := range []string{"nonsense", "fd00::/64", "10.0.0.0/30"} {
		t.Setenv(EnvPool, bad)
		if _, err := Pool(); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}
