package cli

import (
	"context"
	"fmt"
	"net/netip"

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

// runningCPNet returns the holder's ID when it is running, "" when it is
// absent or stopped.
func runningCPNet(ctx context.Context, c containerInspector) (string, error) {
	res, err := c.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("inspect %s: %w", consts.ControlPlaneNetContainer, err)
	case res.Container.State == nil || !res.Container.State.Running:
		return "", nil
	}
	return res.Container.ID, nil
}

// ensureCPNet returns the running holder's ID: a stopped one is started
// (Docker remakes its endpoints), one that will not start is replaced.
func ensureCPNet(ctx context.Context, c cpDocker) (string, error) {
	res, err := c.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	switch {
	case err == nil:
		id := res.Container.ID
		if st := res.Container.State; st != nil && st.Running {
			return id, nil
		}
		// A start fails when an agent network it was on has gone since.
		if _, err := c.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err == nil {
			return id, nil
		}
		if _, err := c.ContainerRemove(ctx, id, mobyclient.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("remove stopped %s: %w", consts.ControlPlaneNetContainer, err)
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
	loopback := netip.MustParseAddr("127.0.0.1")
	adminPort := network.MustParsePort(fmt.Sprintf("%d/tcp", consts.PortAdmin))
	healthPort := network.MustParsePort(fmt.Sprintf("%d/tcp", consts.PortHealth))
	res, err := c.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: consts.ControlPlaneNetContainer,
		Config: &container.Config{
			Image:        consts.ControlPlaneImage,
			Cmd:          []string{"hold"},
			Labels:       managedLabels(map[string]string{consts.LabelPurpose: consts.PurposeControlPlaneNet}),
			ExposedPorts: network.PortSet{adminPort: struct{}{}, healthPort: struct{}{}},
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode(consts.NetworkName),
			// HostPort "" lets Docker pick a free port: two installs (or a
			// test next to a real install) never clash. The CLI finds the
			// port by inspecting the holder.
			PortBindings: network.PortMap{
				adminPort:  {{HostIP: loopback, HostPort: ""}},
				healthPort: {{HostIP: loopback, HostPort: ""}},
			},
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
