package cli

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// The CP's network namespace belongs to a holder container
// (clawker-controlplane-net) that only waits to be stopped. Docker makes a
// container's endpoints one at a time, ~0.1 s each, so a CP that owned them
// took 20 s to 60 s to rejoin 200 agent networks after each restart.

// cpNetMode is the network mode of a CP container sharing holder's namespace.
func cpNetMode(holderID string) container.NetworkMode {
	return container.NetworkMode("container:" + holderID)
}

// cpNet is the holder as cp up found it: id is "" unless it is running and
// clawker's own (ownCPNet).
type cpNet struct {
	id      string
	started time.Time
}

// runningCPNet inspects the holder.
func runningCPNet(ctx context.Context, c containerInspector) (cpNet, error) {
	res, err := c.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		return cpNet{}, nil
	case err != nil:
		return cpNet{}, fmt.Errorf("inspect %s: %w", consts.ControlPlaneNetContainer, err)
	case !ownCPNet(res.Container) || res.Container.State == nil || !res.Container.State.Running:
		return cpNet{}, nil
	}
	return cpNet{id: res.Container.ID, started: startedAt(res.Container.State)}, nil
}

// keeps reports whether a running CP container can stay in this holder's
// namespace: it shares it, and the holder has not been restarted since
// the CP started (a restart keeps the ID but makes a new namespace).
func (n cpNet) keeps(cp container.InspectResponse) bool {
	hc := cp.HostConfig
	return n.id != "" && hc != nil && hc.NetworkMode == cpNetMode(n.id) && cp.State != nil &&
		!n.started.IsZero() && !n.started.After(startedAt(cp.State))
}

func startedAt(st *container.State) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, st.StartedAt)
	return t
}

// ownCPNet reports whether a container under the holder's name is the one
// createCPNet makes. Anyone with the Docker API can make a container of that
// name; the CP must not share the namespace of one with other ports, mounts
// or privileges.
func ownCPNet(ctr container.InspectResponse) bool {
	cfg, hc := ctr.Config, ctr.HostConfig
	if cfg == nil || hc == nil || cfg.Labels[consts.LabelPurpose] != consts.PurposeControlPlaneNet ||
		cfg.Image != consts.ControlPlaneImage || !slices.Equal(cfg.Cmd, []string{holdArg}) ||
		hc.NetworkMode != consts.NetworkName || hc.Privileged || len(hc.CapAdd) > 0 || len(hc.Mounts) > 0 ||
		len(hc.Binds) > 0 || hc.PidMode != "" || (hc.IpcMode != "" && hc.IpcMode != "private" && hc.IpcMode != "shareable") {
		return false
	}
	want := cpPorts()
	if len(hc.PortBindings) != len(want) {
		return false
	}
	for p, bs := range hc.PortBindings {
		if !slices.Contains(want, p) || len(bs) != 1 || !bs[0].HostIP.IsLoopback() {
			return false
		}
	}
	return true
}

// holdArg is the holder's command: clawker-cp waits to be stopped.
const holdArg = "hold"

// cpPorts are the CP ports published on 127.0.0.1: admin and health.
func cpPorts() []network.Port {
	return []network.Port{
		network.MustParsePort(fmt.Sprintf("%d/tcp", consts.PortAdmin)),
		network.MustParsePort(fmt.Sprintf("%d/tcp", consts.PortHealth)),
	}
}

// ensureCPNet returns the running holder's ID: a stopped one is started
// (Docker remakes its endpoints), one that will not start, or that clawker
// did not make, is replaced.
func ensureCPNet(ctx context.Context, c cpDocker) (string, error) {
	res, err := c.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	switch {
	case err == nil:
		id := res.Container.ID
		if ownCPNet(res.Container) {
			if st := res.Container.State; st != nil && st.Running {
				return id, nil
			}
			// A start fails when an agent network it was on has gone since.
			if _, err := c.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err == nil {
				return id, nil
			}
		}
		if _, err := c.ContainerRemove(ctx, id, mobyclient.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("remove %s: %w", consts.ControlPlaneNetContainer, err)
		}
	case !cerrdefs.IsNotFound(err):
		return "", fmt.Errorf("inspect %s: %w", consts.ControlPlaneNetContainer, err)
	}
	id, err := createCPNet(ctx, c)
	if err != nil {
		return "", err
	}
	if _, err := c.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err != nil {
		_, _ = c.ContainerRemove(context.WithoutCancel(ctx), id, mobyclient.ContainerRemoveOptions{Force: true})
		return "", fmt.Errorf("start %s: %w", consts.ControlPlaneNetContainer, err)
	}
	return id, nil
}

// createCPNet makes the holder from the CP image: it owns the CP's DNS name
// on clawker-net and the published admin and health ports.
func createCPNet(ctx context.Context, c containerCreator) (string, error) {
	exposed, bindings := network.PortSet{}, network.PortMap{}
	for _, p := range cpPorts() {
		exposed[p] = struct{}{}
		// HostPort "" lets Docker pick a free port: two installs (or a test
		// next to a real install) never clash. The CLI finds the port by
		// inspecting the holder.
		bindings[p] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: ""}}
	}
	res, err := c.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: consts.ControlPlaneNetContainer,
		Config: &container.Config{
			Image:        consts.ControlPlaneImage,
			Cmd:          []string{holdArg},
			Labels:       managedLabels(map[string]string{consts.LabelPurpose: consts.PurposeControlPlaneNet}),
			ExposedPorts: exposed,
		},
		HostConfig: &container.HostConfig{
			NetworkMode:   container.NetworkMode(consts.NetworkName),
			PortBindings:  bindings,
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
			LogConfig:     cpLogConfig,
		},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			consts.NetworkName: {Aliases: []string{consts.ControlPlaneContainer}},
		}},
	})
	if err != nil {
		return "", fmt.Errorf("create %s: %w", consts.ControlPlaneNetContainer, err)
	}
	return res.ID, nil
}

// removeCPNetIfUnused removes the holder once no agent container is left
// for a later CP to reach through it; removed reports whether it went.
func removeCPNetIfUnused(ctx context.Context, c cpDownDocker) (removed bool, err error) {
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent)
	res, err := c.ContainerList(ctx, mobyclient.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return false, fmt.Errorf("list agent containers: %w", err)
	}
	if len(res.Items) > 0 {
		return false, nil
	}
	return removeCPNet(ctx, c)
}

// removeCPNet removes the holder, taking the CP's endpoints with it.
func removeCPNet(ctx context.Context, c containerRemover) (removed bool, err error) {
	_, err = c.ContainerRemove(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerRemoveOptions{Force: true})
	switch {
	case cerrdefs.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("remove %s: %w", consts.ControlPlaneNetContainer, err)
	}
	return true, nil
}

// cpDownDocker is what cp down uses.
type cpDownDocker interface {
	containerLister
	containerRemover
}
