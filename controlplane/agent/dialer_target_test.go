package agent

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

func TestNewValidates(t *testing.T) {
	p := newDTPKI(t)
	bus := overseer.New(nil)
	reg := NewRegistry(nil)
	if _, err := New(nil, nil, nil, reg, p.certPath, p.keyPath, p.pool, nil); err == nil {
		t.Fatal("nil bus accepted")
	}
	if _, err := New(nil, nil, bus, nil, p.certPath, p.keyPath, p.pool, nil); err == nil {
		t.Fatal("nil registry accepted")
	}
	if _, err := New(nil, nil, bus, reg, "/nonexistent", p.keyPath, p.pool, nil); err == nil {
		t.Fatal("missing cert accepted")
	}
	if _, err := New(nil, nil, bus, reg, p.certPath, p.keyPath, p.pool, nil); err == nil {
		t.Fatal("nil docker without resolver accepted")
	}
	if _, err := NewExecutor(nil, nil); err == nil {
		t.Fatal("executor with nil bus accepted")
	}
}

type fakeInspector struct {
	res mobyclient.ContainerInspectResult
	err error
}

func (f fakeInspector) ContainerInspect(context.Context, string, mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	return f.res, f.err
}

func inspectResult(running bool, ip string) mobyclient.ContainerInspectResult {
	c := container.InspectResponse{
		State:           &container.State{Running: running},
		Config:          &container.Config{Labels: map[string]string{consts.LabelAgent: "dev", consts.LabelProject: "proj"}},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{}},
	}
	if ip != "" {
		c.NetworkSettings.Networks[agentnet.NameOf("proj", "dev")] = &network.EndpointSettings{IPAddress: netip.MustParseAddr(ip)}
		// An address on clawker-net is never dialed.
		c.NetworkSettings.Networks[consts.NetworkName] = &network.EndpointSettings{IPAddress: netip.MustParseAddr("172.31.0.9")}
	}
	return mobyclient.ContainerInspectResult{Container: c}
}

func TestInspectTargetResolution(t *testing.T) {
	p := newDTPKI(t)
	mk := func(f fakeInspector) *Dialer {
		d, err := New(nil, f, overseer.New(nil), NewRegistry(nil), p.certPath, p.keyPath, p.pool, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	tgt, err := mk(fakeInspector{res: inspectResult(true, "172.30.0.5")}).resolve(context.Background(), "c")
	if err != nil || tgt.Address != "172.30.0.5:7700" || tgt.AgentName != "dev" || tgt.Project != "proj" {
		t.Fatalf("target %+v err %v", tgt, err)
	}
	if _, err := mk(fakeInspector{res: inspectResult(false, "172.30.0.5")}).resolve(context.Background(), "c"); !errors.Is(err, ErrContainerNotRunning) {
		t.Fatalf("stopped: %v", err)
	}
	_, err = mk(fakeInspector{res: inspectResult(true, "")}).resolve(context.Background(), "c")
	if err == nil || errors.Is(err, ErrContainerGone) || errors.Is(err, ErrContainerNotRunning) {
		t.Fatalf("not-yet-attached must be a retryable error: %v", err)
	}
	_, err = mk(fakeInspector{err: cerrdefs.ErrNotFound}).resolve(context.Background(), "c")
	if !errors.Is(err, ErrContainerGone) {
		t.Fatalf("not found: %v", err)
	}
}
