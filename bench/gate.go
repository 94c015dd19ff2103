package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// gateRow is figure 3 at one container count.
type gateRow struct {
	Containers       int     `json:"containers"`
	Lookup           stat    `json:"indexed_lookup"`
	LookupCallsPerOp float64 `json:"indexed_docker_calls_per_op"`
	Naive            stat    `json:"naive_walk"`
	NaiveCallsPerOp  float64 `json:"naive_docker_calls_per_op"`
}

// countingClient counts Docker API calls made through it.
type countingClient struct {
	peerid.DockerClient
	n atomic.Int64
}

func (c *countingClient) ContainerList(ctx context.Context, o mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error) {
	c.n.Add(1)
	return c.DockerClient.ContainerList(ctx, o)
}

func (c *countingClient) ContainerInspect(ctx context.Context, id string, o mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	c.n.Add(1)
	return c.DockerClient.ContainerInspect(ctx, id, o)
}

// naiveLookup is the anchor: list every agent container and inspect each
// one (exhaustively: an IP claimed twice must be refused).
func naiveLookup(ctx context.Context, cli peerid.DockerClient, ip netip.Addr) (string, error) {
	res, err := cli.ContainerList(ctx, mobyclient.ContainerListOptions{
		Filters: make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent),
	})
	if err != nil {
		return "", err
	}
	var match []string
	for _, c := range res.Items {
		in, err := cli.ContainerInspect(ctx, c.ID, mobyclient.ContainerInspectOptions{})
		if err != nil {
			continue
		}
		n, _ := agentnet.NameFromLabels(in.Container.Config.Labels)
		if ep := in.Container.NetworkSettings.Networks[n]; ep != nil && ep.IPAddress == ip {
			match = append(match, c.ID)
		}
	}
	if len(match) != 1 {
		return "", fmt.Errorf("%d containers hold %s", len(match), ip)
	}
	return match[0], nil
}

// ensureNetwork makes clawker-net if the CP run left none (labelled so the
// sweep removes it).
func (e *env) ensureNetwork(ctx context.Context) error {
	_, err := e.docker.NetworkInspect(ctx, consts.NetworkName, mobyclient.NetworkInspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return err
	}
	_, err = e.docker.NetworkCreate(ctx, consts.NetworkName, mobyclient.NetworkCreateOptions{
		Driver: "bridge", Labels: map[string]string{consts.LabelTest: benchLabelValue},
	})
	return err
}

// spawnSleepers starts containers labelled as agents on their own agent
// networks (no
// clawkerd: the CP is down during this phase, and the lookup only reads
// what the engine says about them).
func (e *env) spawnSleepers(ctx context.Context, from, to int) ([]string, []netip.Addr, error) {
	ids := make([]string, to-from)
	ips := make([]netip.Addr, to-from)
	project, _ := auth.NewProjectSlug("gate")
	err := parallel(to-from, 4, func(i int) error {
		name := fmt.Sprintf("g%04d", from+i)
		an, err := auth.NewAgentName(name)
		if err != nil {
			return err
		}
		// Each on its own agent network, as clawker run puts agents.
		anet, _, err := agentnet.Ensure(ctx, e.docker, project, an, map[string]string{consts.LabelTest: benchLabelValue})
		if err != nil {
			return err
		}
		res, err := e.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
			Config: &container.Config{Image: agentImage, Cmd: []string{"sleep", "86400"}, Labels: map[string]string{
				consts.LabelTest: benchLabelValue, consts.LabelPurpose: consts.PurposeAgent,
				consts.LabelAgent: name, consts.LabelProject: "gate",
			}},
			HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(anet.Name)},
			NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
				anet.Name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: anet.AgentAddr()}},
			}},
		})
		if err != nil {
			return err
		}
		if _, err := e.docker.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{}); err != nil {
			return err
		}
		in, err := e.docker.ContainerInspect(ctx, res.ID, mobyclient.ContainerInspectOptions{})
		if err != nil {
			return err
		}
		ep := in.Container.NetworkSettings.Networks[anet.Name]
		if ep == nil || !ep.IPAddress.IsValid() {
			return errors.New("sleeper has no agent-network IP")
		}
		ids[i], ips[i] = res.ID, ep.IPAddress
		return nil
	})
	return ids, ips, err
}

// measureGate grows the agent-container population through counts and,
// at each size, times the production indexed lookup (what every Register
// pays to the engine) next to the naive walk.
func (e *env) measureGate(ctx context.Context, counts []int, lookups, naiveReps int) ([]gateRow, error) {
	if err := e.ensureNetwork(ctx); err != nil {
		return nil, err
	}
	var ids []string
	var ips []netip.Addr
	var rows []gateRow
	for _, n := range counts {
		if n > len(ids) {
			more, moreIPs, err := e.spawnSleepers(ctx, len(ids), n)
			if err != nil {
				return rows, fmt.Errorf("spawn %d: %w", n, err)
			}
			ids, ips = append(ids, more...), append(ips, moreIPs...)
		}
		row := gateRow{Containers: n}
		cc := &countingClient{DockerClient: e.docker}
		m := peerid.NewIndex(cc, nil)
		if err := m.Refresh(ctx); err != nil {
			return rows, err
		}
		cc.n.Store(0)
		cn := &countingClient{DockerClient: e.docker}
		var s, ns sample
		// Indexed lookups and naive walks interleaved (alternate).
		err := alternate(
			variant{lookups, func(i int) error {
				k := (i * 7919) % n
				start := time.Now()
				rc, err := m.LookupByIP(ctx, ips[k])
				s.addDur(time.Since(start))
				if err != nil || rc.ContainerID != ids[k] {
					return fmt.Errorf("lookup %s: %+v %v", ips[k], rc, err)
				}
				return nil
			}},
			variant{naiveReps, func(i int) error {
				k := (i * 7919) % n
				start := time.Now()
				id, err := naiveLookup(ctx, cn, ips[k])
				ns.addDur(time.Since(start))
				if err != nil || id != ids[k] {
					return fmt.Errorf("naive %s: %s %v", ips[k], id, err)
				}
				return nil
			}},
		)
		if err != nil {
			return rows, err
		}
		row.Lookup = s.stat("ms")
		row.LookupCallsPerOp = float64(cc.n.Load()) / float64(lookups)
		row.Naive = ns.stat("ms")
		row.NaiveCallsPerOp = float64(cn.n.Load()) / float64(naiveReps)
		rows = append(rows, row)
		fmt.Printf("gate %d: indexed %s (%.2f calls), naive %s (%.0f calls)\n", n, row.Lookup, row.LookupCallsPerOp, row.Naive, row.NaiveCallsPerOp)
	}
	return rows, nil
}
