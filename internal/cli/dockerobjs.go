package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

// EnvExtraLabels adds labels ("k=v,k=v") to every Docker object the CLI
// creates. The e2e suite sets it to dev.clawker.test=e2e so its sweep finds
// everything the CLI made on its behalf.
const EnvExtraLabels = "CLAWKER_LABELS"

// managedLabels returns the labels every CLI-created object carries, plus
// extra.
func managedLabels(extra map[string]string) map[string]string {
	l := map[string]string{consts.LabelManaged: "true"}
	for _, kv := range strings.Split(os.Getenv(EnvExtraLabels), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && k != "" {
			l[k] = v
		}
	}
	for k, v := range extra {
		l[k] = v
	}
	return l
}

// ensureNetwork creates clawker-net (the CP's own bridge) when missing and
// refuses one clawker did not create: a foreign network could be shared
// with containers the operator never meant to put next to the CP.
func ensureNetwork(ctx context.Context, c agentnet.Docker) error {
	res, err := c.NetworkInspect(ctx, consts.NetworkName, mobyclient.NetworkInspectOptions{})
	if err == nil {
		if res.Network.Labels[consts.LabelManaged] != "true" {
			return withCode(ExitUsage, fmt.Errorf("network %s exists but clawker did not create it (no %s=true label): "+
				"remove it (docker network rm %s) and run clawker again", consts.NetworkName, consts.LabelManaged, consts.NetworkName))
		}
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", consts.NetworkName, err)
	}
	_, err = c.NetworkCreate(ctx, consts.NetworkName, mobyclient.NetworkCreateOptions{
		Driver: "bridge",
		Labels: managedLabels(nil),
	})
	if err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("create network %s: %w", consts.NetworkName, err)
	}
	return nil
}

// ensureVolume creates the CP data volume when missing.
func ensureVolume(ctx context.Context, c volumeDocker, name string) error {
	_, err := c.VolumeInspect(ctx, name, mobyclient.VolumeInspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect volume %s: %w", name, err)
	}
	if _, err := c.VolumeCreate(ctx, mobyclient.VolumeCreateOptions{Name: name, Labels: managedLabels(nil)}); err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	return nil
}
