package cli

import (
	"context"

	mobyclient "github.com/moby/moby/client"
)

// limitsJSON is an agent's enforced cgroup limits, read from its
// container's HostConfig (what Docker applies, not what was asked).
// 0 means unlimited.
type limitsJSON struct {
	CPUs        float64 `json:"cpus"`
	MemoryBytes int64   `json:"memory_bytes"`
	PidsLimit   int64   `json:"pids_limit"`
}

// withLimits fills each agent's limits from Docker. Best effort: the
// registry view is printed even when Docker cannot be asked, without
// limits.
func (a *app) withLimits(ctx context.Context, agents []agentJSON) []agentJSON {
	if len(agents) == 0 || a.rt != nil { // limits are Docker's
		return agents
	}
	c, err := a.docker(ctx)
	if err != nil {
		return agents
	}
	defer c.Close()
	for i := range agents {
		if agents[i].ContainerID == "" {
			continue
		}
		agents[i].Limits = containerLimits(ctx, c, agents[i].ContainerID)
	}
	return agents
}

func containerLimits(ctx context.Context, c containerInspector, id string) *limitsJSON {
	res, err := c.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil || res.Container.HostConfig == nil {
		return nil
	}
	r := res.Container.HostConfig.Resources
	l := &limitsJSON{CPUs: float64(r.NanoCPUs) / 1e9, MemoryBytes: r.Memory}
	if r.PidsLimit != nil && *r.PidsLimit > 0 {
		l.PidsLimit = *r.PidsLimit
	}
	return l
}
