package peerid

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// Real-engine fixtures for the peer lookup. Every object carries
// dev.clawker.test=peerlookup and is swept at start and removed in
// cleanup. Containers use their own network and purpose label value so a
// clawker CP running on this engine (e2e) never mistakes them for agents.
const (
	plTestLabel  = "peerlookup"
	plImage      = "clawker-peerlookup-busybox:test"
	plPurpose    = "agent-peerlookup-test"
	plBusyboxSrc = "/bin/busybox"
)

type plDocker struct {
	cli     *mobyclient.Client
	network string
	mu      sync.Mutex
	ids     []string
}

// newPLDocker connects to the engine (skipping when absent, unless
// CLAWKER_E2E=1), sweeps leftovers, imports the busybox image and creates
// a fresh network, all removed in cleanup.
func newPLDocker(tb testing.TB) *plDocker {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli, err := mobyclient.New(mobyclient.FromEnv)
	if err == nil {
		_, err = cli.Ping(ctx, mobyclient.PingOptions{})
	}
	if err != nil {
		if os.Getenv(consts.EnvE2E) == "1" {
			tb.Fatalf("docker engine required (CLAWKER_E2E=1): %v", err)
		}
		tb.Skipf("no docker engine: %v", err)
	}
	if _, err := os.Stat(plBusyboxSrc); err != nil {
		tb.Skipf("%s missing (apt-get install busybox-static)", plBusyboxSrc)
	}
	d := &plDocker{cli: cli}
	d.sweep(ctx)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		d.sweep(ctx)
		_, _ = cli.ImageRemove(ctx, plImage, mobyclient.ImageRemoveOptions{Force: true})
		cli.Close()
	})
	if err := d.importImage(ctx); err != nil {
		tb.Fatal(err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	d.network = "clawker-pl-" + hex.EncodeToString(suffix)
	if _, err := cli.NetworkCreate(ctx, d.network, mobyclient.NetworkCreateOptions{
		Driver: "bridge", Labels: map[string]string{consts.LabelTest: plTestLabel},
	}); err != nil {
		tb.Fatalf("create network: %v", err)
	}
	return d
}

func (d *plDocker) sweep(ctx context.Context) {
	f := make(mobyclient.Filters).Add("label", consts.LabelTest+"="+plTestLabel)
	if res, err := d.cli.ContainerList(ctx, mobyclient.ContainerListOptions{All: true, Filters: f}); err == nil {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, c := range res.Items {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				_, _ = d.cli.ContainerRemove(ctx, c.ID, mobyclient.ContainerRemoveOptions{Force: true})
			})
		}
		wg.Wait()
	}
	if res, err := d.cli.NetworkList(ctx, mobyclient.NetworkListOptions{Filters: f}); err == nil {
		for _, n := range res.Items {
			_, _ = d.cli.NetworkRemove(ctx, n.ID, mobyclient.NetworkRemoveOptions{})
		}
	}
}

func (d *plDocker) importImage(ctx context.Context) error {
	bin, err := os.ReadFile(plBusyboxSrc)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "busybox", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	rc, err := d.cli.ImageImport(ctx, mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, plImage,
		mobyclient.ImageImportOptions{Changes: []string{"LABEL " + consts.LabelTest + "=" + plTestLabel}})
	if err != nil {
		return fmt.Errorf("image import: %w", err)
	}
	_, _ = io.Copy(io.Discard, rc)
	return rc.Close()
}

// spawn creates and starts n sleeping containers with the given labels
// (plus the test and purpose labels), concurrently.
func (d *plDocker) spawn(ctx context.Context, labels func(i int) map[string]string, from, to int) ([]string, error) {
	ids := make([]string, to-from)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i := from; i < to; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			l := labels(i)
			l[consts.LabelTest] = plTestLabel
			res, err := d.cli.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
				Config:           &container.Config{Image: plImage, Cmd: []string{"/busybox", "sleep", "3600"}, Labels: l},
				HostConfig:       &container.HostConfig{NetworkMode: container.NetworkMode(d.network), AutoRemove: false},
				NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{d.network: {}}},
			})
			if err == nil {
				_, err = d.cli.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{})
			}
			if err != nil {
				firstErr.CompareAndSwap(nil, fmt.Errorf("container %d: %w", i, err))
				return
			}
			ids[i-from] = res.ID
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.ids = append(d.ids, ids...)
	d.mu.Unlock()
	return ids, nil
}

func (d *plDocker) ipOf(ctx context.Context, id string) (netip.Addr, error) {
	res, err := d.cli.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return netip.Addr{}, err
	}
	if ep := res.Container.NetworkSettings.Networks[d.network]; ep != nil && ep.IPAddress.IsValid() {
		return ep.IPAddress, nil
	}
	return netip.Addr{}, errors.New("no IP on test network")
}

func (d *plDocker) lookup(cli DockerClient) *Index {
	m := NewIndex(cli, logger.Nop())
	m.network, m.purpose = d.network, plPurpose
	return m
}

func plAgentLabels(i int) map[string]string {
	return map[string]string{consts.LabelPurpose: plPurpose, consts.LabelAgent: fmt.Sprintf("a%d", i), consts.LabelProject: "bench"}
}

// TestIndexRealEngine resolves real container IPs, follows a
// stop through Observe and a removal the index never heard about.
func TestIndexRealEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("real engine")
	}
	d := newPLDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids, err := d.spawn(ctx, func(i int) map[string]string {
		l := plAgentLabels(i)
		if i == 2 {
			l[consts.LabelAgent] = "Not.Valid"
		}
		if i == 1 {
			delete(l, consts.LabelProject)
		}
		return l
	}, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	m := d.lookup(d.cli)
	if got, err := m.ListAgentContainerIDs(ctx); err != nil || len(got) != 3 {
		t.Fatalf("ListAgentContainerIDs = %v, %v", got, err)
	}
	ip0, err := d.ipOf(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	rc, err := m.LookupByIP(ctx, ip0)
	if err != nil || rc.ContainerID != ids[0] || rc.AgentName.String() != "a0" || rc.Project.String() != "bench" {
		t.Fatalf("LookupByIP(%s) = %+v, %v", ip0, rc, err)
	}
	ip1, _ := d.ipOf(ctx, ids[1])
	if rc, err := m.LookupByIP(ctx, ip1); err != nil || !rc.Project.IsZero() || rc.AgentName.String() != "a1" {
		t.Fatalf("global agent: %+v, %v", rc, err)
	}
	ip2, _ := d.ipOf(ctx, ids[2])
	if _, err := m.LookupByIP(ctx, ip2); !errors.Is(err, ErrInvalidAgentLabel) {
		t.Fatalf("invalid label: %v", err)
	}
	// Stop container 0 and tell the index; its IP no longer resolves.
	if _, err := d.cli.ContainerStop(ctx, ids[0], mobyclient.ContainerStopOptions{Timeout: new(int)}); err != nil {
		t.Fatal(err)
	}
	m.Observe(ctx, ids[0], "die")
	if _, err := m.LookupByIP(ctx, ip0); !errors.Is(err, ErrNoContainerForPeerIP) {
		t.Fatalf("stopped: %v", err)
	}
	// Remove container 1 behind the index's back: the confirming inspect
	// refuses it.
	if _, err := d.cli.ContainerRemove(ctx, ids[1], mobyclient.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.LookupByIP(ctx, ip1); !errors.Is(err, ErrNoContainerForPeerIP) {
		t.Fatalf("removed: %v", err)
	}
}
