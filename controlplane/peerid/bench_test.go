package peerid

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// countingClient counts Docker API calls made through it.
type countingClient struct {
	DockerClient
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

// naiveLookup is the walk the index replaces: list every agent container
// and inspect each one, exhaustively (ambiguity must be detected).
func naiveLookup(ctx context.Context, cli DockerClient, netName, purpose string, ip netip.Addr) (string, error) {
	res, err := cli.ContainerList(ctx, mobyclient.ContainerListOptions{
		Filters: make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+purpose),
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
		if ep := in.Container.NetworkSettings.Networks[netName]; ep != nil && ep.IPAddress == ip {
			match = append(match, c.ID)
		}
	}
	if len(match) != 1 {
		return "", fmt.Errorf("%d matches: %w", len(match), ErrNoContainerForPeerIP)
	}
	return match[0], nil
}

// BenchmarkPeerLookup measures the Docker-touching part of the identity
// gate (what every Register pays) on the real engine with 10, 100 and 500
// agent containers: the indexed lookup next to the naive walk, in the same
// run. Reports dockercalls/op beside ns/op. Run with e.g.
//
//	go test -run '^$' -bench BenchmarkPeerLookup -benchtime 20x ./controlplane/peerid
func BenchmarkPeerLookup(b *testing.B) {
	d := newPLDocker(b)
	ctx := context.Background()
	var ids []string
	var ips []netip.Addr
	for _, n := range []int{10, 100, 500} {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
		more, err := d.spawn(cctx, plAgentLabels, len(ids), n)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		for _, id := range more {
			ip, err := d.ipOf(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			ids, ips = append(ids, id), append(ips, ip)
		}
		b.Run(fmt.Sprintf("containers=%d/indexed", n), func(b *testing.B) {
			cc := &countingClient{DockerClient: d.cli}
			m := d.lookup(cc)
			if err := m.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
			cc.n.Store(0)
			ops := 0
			for b.Loop() {
				i := ops % n
				rc, err := m.LookupByIP(ctx, ips[i])
				if err != nil || rc.ContainerID != ids[i] {
					b.Fatalf("lookup %s: %+v, %v", ips[i], rc, err)
				}
				ops++
			}
			b.ReportMetric(float64(cc.n.Load())/float64(ops), "dockercalls/op")
		})
		b.Run(fmt.Sprintf("containers=%d/naive", n), func(b *testing.B) {
			cc := &countingClient{DockerClient: d.cli}
			ops := 0
			for b.Loop() {
				i := ops % n
				id, err := naiveLookup(ctx, cc, d.network, plPurpose, ips[i])
				if err != nil || id != ids[i] {
					b.Fatalf("naive %s: %s, %v", ips[i], id, err)
				}
				ops++
			}
			b.ReportMetric(float64(cc.n.Load())/float64(ops), "dockercalls/op")
		})
	}
}
