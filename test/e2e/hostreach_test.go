package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// Issue 18: an agent cannot reach services on the host. Agent networks
// are internal bridges without a host address (inhibit_ipv4), so nothing
// on the host answers on the agent's subnet and nothing routes off it.

// hostListener is a TCP listener in the test process (on the host) that
// records who connected.
type hostListener struct {
	port int
	mu   sync.Mutex
	from []netip.Addr
}

// listenOnHost listens on addr ("0.0.0.0:0", "127.0.0.1:0") until cleanup.
func listenOnHost(t *testing.T, addr string) *hostListener {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	h := &hostListener{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.from = append(h.from, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			h.mu.Unlock()
			c.Close()
		}
	}()
	return h
}

// reachedFrom reports whether a connection from ip was accepted.
func (h *hostListener) reachedFrom(ip netip.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.from {
		if a == ip {
			return true
		}
	}
	return false
}

// hostAddrs are the host's IPv4 addresses an agent could aim at: the
// uplink, docker0 and clawker-net's gateway (other bridges' addresses are
// off-link for the agent just the same).
func hostAddrs(t *testing.T) []netip.Addr {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				out = append(out, p.Addr())
			}
		}
	}
	return append(out, bridgeGateway(t, consts.NetworkName))
}

// bridgeGateway is the host's address on a Docker bridge network.
func bridgeGateway(t *testing.T, name string) netip.Addr {
	t.Helper()
	res, err := suite.docker.NetworkInspect(context.Background(), name, mobyclient.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Network.IPAM.Config {
		if c.Gateway.IsValid() && c.Gateway.Is4() {
			return c.Gateway
		}
	}
	t.Fatalf("network %s has no IPv4 gateway", name)
	return netip.Addr{}
}

// oldStyleInternal runs a container on an internal bridge made the way
// agent networks were before inhibit_ipv4 (the bridge has the host's .1):
// the control that proves the probes can reach the host listener at all.
func oldStyleInternal(t *testing.T, bin []byte) (id string, self, gw netip.Addr) {
	t.Helper()
	ctx := context.Background()
	sub := netip.MustParsePrefix("10.214.78.0/28")
	gw, self = netip.MustParseAddr("10.214.78.1"), netip.MustParseAddr("10.214.78.3")
	const name = "clawker-e2e-oldstyle-internal"
	nres, err := suite.docker.NetworkCreate(ctx, name, mobyclient.NetworkCreateOptions{Driver: "bridge", Internal: true,
		IPAM:   &network.IPAM{Config: []network.IPAMConfig{{Subnet: sub, Gateway: gw}}},
		Labels: map[string]string{consts.LabelTest: "e2e"}})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = suite.docker.NetworkRemove(context.Background(), nres.ID, mobyclient.NetworkRemoveOptions{})
	})
	res, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name:       name,
		Config:     &container.Config{Image: agentImage, Cmd: []string{"sleep", "3600"}, Labels: map[string]string{consts.LabelTest: "e2e"}},
		HostConfig: &container.HostConfig{NetworkMode: name},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: self}}}},
	})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = suite.docker.ContainerRemove(context.Background(), res.ID, mobyclient.ContainerRemoveOptions{Force: true})
	})
	if _, err := suite.docker.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	plantFakenet(t, res.ID, bin, nil)
	return res.ID, self, gw
}

// TestAgentCannotReachHost: a running agent can open no TCP connection to
// a host listener on 0.0.0.0 or 127.0.0.1, whichever host address it
// aims at (its bridge's gateway address, the uplink, docker0,
// clawker-net's gateway), while a container on an internal bridge of the
// old kind reaches the same listener (so the probe is not vacuous), and
// the agent's own gateway (the CP at .2) still answers.
func TestAgentCannotReachHost(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	bin := buildFakenet(t)
	e.must("cp", "up", "--wait", "90s")
	const project = "hr"
	id := strings.TrimSpace(e.must("run", "-d", "--project", project, "--agent", "a1", agentImage, "sleep", "3600").stdout)
	eventually(t, 90*time.Second, "a1 trusted", func() error {
		if r, ok := findAgent(e.agents(), id); !ok || !r.Trusted {
			return fmt.Errorf("%+v", r)
		}
		return nil
	})
	plantFakenet(t, id, bin, nil)
	self := agentNetAddr(t, id)
	cp := cpAddrOn(t, project, "a1")
	agentGW := cp.Prev() // .1: the bridge's gateway, which has no host address now

	wild, local := listenOnHost(t, "0.0.0.0:0"), listenOnHost(t, "127.0.0.1:0")
	old, oldSelf, oldGW := oldStyleInternal(t, bin)
	if out, ok := fakenet(t, old, "tcp", netip.AddrPortFrom(oldGW, uint16(wild.port)).String()); !ok {
		t.Fatalf("control: a container on an old-style internal bridge did not reach the host listener: %s", out)
	}
	eventually(t, 10*time.Second, "control connection accepted", func() error {
		if !wild.reachedFrom(oldSelf) {
			return errors.New("not yet")
		}
		return nil
	})

	// The CP at .2 still answers the agent (the gateway's proxy port).
	if out, ok := fakenet(t, id, "tcp", netip.AddrPortFrom(cp, consts.PortEgressProxy).String()); !ok {
		t.Fatalf("agent cannot reach the CP's egress proxy: %s", out)
	}
	for _, host := range append([]netip.Addr{agentGW, netip.MustParseAddr("127.0.0.1")}, hostAddrs(t)...) {
		for _, l := range []*hostListener{wild, local} {
			target := netip.AddrPortFrom(host, uint16(l.port)).String()
			if out, ok := fakenet(t, id, "tcp", target); ok {
				t.Errorf("agent reached host listener %s: %s", target, out)
			}
		}
	}
	if wild.reachedFrom(self) || local.reachedFrom(self) {
		t.Errorf("a host listener accepted a connection from the agent (%s)", self)
	}
}
