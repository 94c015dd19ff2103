package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

// Issue 13 §4: agents cannot reach each other, and reach the CP at a
// pinned address on their own network that no other container can claim.

// joinAgentNet puts a test container on the agent network of
// (project, agent), making it (as clawker would) and attaching the CP when
// missing; pinned takes the agent's address. Only a Docker user can do
// this: the test plays the attacker who got onto an agent's network, so
// the TLS gates behind the network one are still exercised.
func joinAgentNet(t *testing.T, id, project, agent string, pinned bool) agentnet.Net {
	t.Helper()
	ctx := context.Background()
	n, _, err := agentnet.Ensure(ctx, suite.docker, mustSlug(t, project), mustName(t, agent), map[string]string{consts.LabelTest: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if err := agentnet.ConnectCP(ctx, suite.docker, n); err != nil {
		t.Fatal(err)
	}
	ep := &network.EndpointSettings{}
	if pinned {
		ep.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: n.AgentAddr()}
	}
	if _, err := suite.docker.NetworkConnect(ctx, n.ID, mobyclient.NetworkConnectOptions{Container: id, EndpointConfig: ep}); err != nil {
		t.Fatalf("connect %s to %s: %v", id[:12], n.Name, err)
	}
	return n
}

// agentNetAddr is an agent container's address on its own network.
func agentNetAddr(t *testing.T, id string) netip.Addr {
	t.Helper()
	c := inspectFull(t, id)
	name, ok := agentnet.NameFromLabels(c.Config.Labels)
	ep := c.NetworkSettings.Networks[name]
	if !ok || ep == nil || !ep.IPAddress.IsValid() {
		t.Fatalf("%s has no address on its agent network %q: %v", id[:12], name, c.NetworkSettings.Networks)
	}
	return ep.IPAddress
}

// refusedAtNetwork accepts only a failed TCP connect: the packets never
// reach the peer (timeout) or are rejected on the way.
func refusedAtNetwork(o outcome) error {
	if o.OK || o.Stage != "transport" {
		return fmt.Errorf("want no TCP connection, got stage %s %s", o.Stage, o)
	}
	for _, s := range []string{"timeout", "deadline exceeded", "refused", "unreachable", "no route to host"} {
		if strings.Contains(o.Message, s) {
			return nil
		}
	}
	return fmt.Errorf("want a connect timeout or rejection, got %q", o.Message)
}

// netIsolationAttacks are the network-layer rows of the matrix. alice and
// bob are agents of project; stranger has joined bob's network (so it is
// the control that bob's ports are up).
func netIsolationAttacks(t *testing.T, e *env, project, alice, bob, stranger string) []hostileAttack {
	t.Helper()
	bobIP := agentNetAddr(t, bob)
	bobNet := agentnet.NameOf(project, "bob")
	listenerUp(t, bob, 8080)
	var bobCP netip.Addr
	for name, ep := range inspect(t, consts.ControlPlaneNetContainer).NetworkSettings.Networks {
		if name == bobNet {
			bobCP = ep.IPAddress
		}
	}
	tcp := func(target string) func(string) outcome {
		return func(name string) outcome {
			// Control first: a container on bob's network does connect,
			// so the refusal below is the network's doing.
			if o := runAttacker(t, stranger, name+"-control", material{}, "-mode", "tcp", "-target", target); !o.OK {
				return outcome{Attack: name, Stage: "control", Message: "control connect from bob's network failed: " + o.String()}
			}
			return runAttacker(t, alice, name, material{}, "-mode", "tcp", "-target", target)
		}
	}
	// A host service on every address; stranger's connection through
	// clawker-net's gateway is the control that it answers.
	host := listenOnHost(t, "0.0.0.0:0")
	hostGW := bridgeGateway(t, consts.NetworkName)
	toHost := func(ip netip.Addr) func(string) outcome {
		return func(name string) outcome {
			if o := runAttacker(t, stranger, name+"-control", material{}, "-mode", "tcp", "-target", netip.AddrPortFrom(hostGW, uint16(host.port)).String()); !o.OK {
				return outcome{Attack: name, Stage: "control", Message: "control connect from clawker-net failed: " + o.String()}
			}
			o := runAttacker(t, alice, name, material{}, "-mode", "tcp", "-target", netip.AddrPortFrom(ip, uint16(host.port)).String())
			if ip := agentNetAddr(t, alice); host.reachedFrom(ip) {
				o.OK, o.Message = true, "host listener accepted "+ip.String()
			}
			return o
		}
	}
	layer := "(network: separate agent bridges)"
	return []hostileAttack{
		{name: "net-agent-to-agent-clawkerd-7700", surface: "network", from: "alice", layer: layer,
			run: tcp(netip.AddrPortFrom(bobIP, consts.PortSession).String()), want: refusedAtNetwork},
		{name: "net-agent-to-agent-listener-8080", surface: "network", from: "alice", layer: layer,
			run: tcp(netip.AddrPortFrom(bobIP, 8080).String()), want: refusedAtNetwork},
		{name: "net-agent-to-cp-on-another-agent-net", surface: "network", from: "alice", layer: layer,
			run: tcp(netip.AddrPortFrom(bobCP, consts.PortAgent).String()), want: refusedAtNetwork},
		// The host: a listener on 0.0.0.0, aimed at through alice's own
		// bridge gateway and clawker-net's (control: stranger, on
		// clawker-net, reaches it).
		{name: "net-agent-to-host-via-own-gateway", surface: "network", from: "alice", layer: "(network: no host address on agent bridges)",
			run: toHost(agentNetAddr(t, alice).Prev().Prev()), want: refusedAtNetwork},
		{name: "net-agent-to-host-via-clawker-net", surface: "network", from: "alice", layer: "(network: no host address on agent bridges)",
			run: toHost(hostGW), want: refusedAtNetwork},
		{name: "net-cp-alias-squatter", surface: "network", from: "squatter", layer: "(pinned CP address)",
			run: func(name string) outcome { return squatCPAlias(t, e, project, name) }, want: squatFailed},
	}
}

// listenerUp starts a TCP listener on port in container id (a dev server
// stand-in) and waits until it accepts.
func listenerUp(t *testing.T, id string, port int) {
	t.Helper()
	ctx := context.Background()
	ex, err := suite.docker.ExecCreate(ctx, id, mobyclient.ExecCreateOptions{Cmd: []string{"nc", "-ll", "-p", fmt.Sprint(port), "-e", "/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := suite.docker.ExecStart(ctx, ex.ID, mobyclient.ExecStartOptions{Detach: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "listener up", func() error {
		if out, _ := execIn(t, id, "netstat", "-ltn"); !strings.Contains(out, fmt.Sprintf(":%d ", port)) {
			return fmt.Errorf("not listening: %s", out)
		}
		return nil
	})
}

// squatCPAlias starts a container on clawker-net wearing the CP's name as
// a network alias (any container may), then runs a new agent: it must
// register all the same, having been pointed at the CP's pinned address.
// The agent is removed again so the registry is back to the baseline.
func squatCPAlias(t *testing.T, e *env, project, name string) outcome {
	t.Helper()
	ctx := context.Background()
	res, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name:       "clawker-e2e-squatter",
		Config:     &container.Config{Image: agentImage, Cmd: []string{"nc", "-ll", "-p", fmt.Sprint(consts.PortAgent), "-e", "/bin/true"}, Labels: map[string]string{consts.LabelTest: "e2e"}},
		HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(consts.NetworkName)},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			consts.NetworkName: {Aliases: []string{consts.ControlPlaneContainer}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = suite.docker.ContainerRemove(context.Background(), res.ID, mobyclient.ContainerRemoveOptions{Force: true})
	})
	if _, err := suite.docker.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	carol := strings.TrimSpace(e.must("run", "-d", "--project", project, "--agent", "carol", agentImage, "sleep", "3600").stdout)
	o := outcome{Attack: name, Mode: "squat", Stage: "squat"}
	eventually(t, 90*time.Second, "carol registered despite the squatter", func() error {
		if r, ok := findAgent(e.agents(), carol); !ok || !r.Registered || r.Session != "connected" {
			return fmt.Errorf("%+v", r)
		}
		return nil
	})
	n := agentnet.NameOf(project, "carol")
	env := inspectFull(t, carol).Config.Env
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, consts.EnvCPAgentAddr+"="); ok {
			o.Message = "carol registered via " + v
		}
	}
	cpEP := inspect(t, consts.ControlPlaneNetContainer).NetworkSettings.Networks[n]
	if cpEP == nil || !slices.Contains(env, consts.EnvCPAgentAddr+"="+netip.AddrPortFrom(cpEP.IPAddress, consts.PortAgent).String()) {
		o.Stage, o.Message = "squat-env", fmt.Sprintf("carol not pointed at the CP's pinned address on %s: %v", n, env)
	}
	e.must("rm", "-f", "--project", project, "carol")
	eventually(t, 30*time.Second, "carol's row and network gone", func() error {
		if r, ok := findAgent(e.agents(), carol); ok && r.Registered {
			return fmt.Errorf("still registered: %+v", r)
		}
		if _, err := suite.docker.NetworkInspect(context.Background(), n, mobyclient.NetworkInspectOptions{}); err == nil {
			return fmt.Errorf("network %s still there", n)
		}
		return nil
	})
	return o
}

// squatFailed: the squat is refused when the new agent registered anyway.
func squatFailed(o outcome) error {
	if o.OK || o.Stage != "squat" || !strings.HasPrefix(o.Message, "carol registered via ") {
		return fmt.Errorf("the squatter got in the way: %s %s", o.Stage, o.Message)
	}
	return nil
}

func inspectFull(t *testing.T, id string) container.InspectResponse {
	t.Helper()
	res, err := suite.docker.ContainerInspect(context.Background(), id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Container
}
