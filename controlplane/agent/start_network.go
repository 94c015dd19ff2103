package agent

import (
	"context"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/controlplane/overseer"
)

// isNetworkChange selects an agent container's network connect or
// disconnect, whatever the network (see dockerevents.WithNetworkEvents).
func isNetworkChange(e overseer.Event) bool {
	d, ok := e.(dockerevents.DockerEvent)
	if !ok || !d.IsAgent() {
		return false
	}
	return d.Action == dockerevents.ActionNetworkConnect || d.Action == dockerevents.ActionNetworkDisconnect
}

// onNetworkChange redials the agent's Session if the path changed (the
// peer index follows the same event by its own subscription).
func (st *starter) onNetworkChange(ctx context.Context, e dockerevents.DockerEvent) {
	why := "network " + e.Action + " " + e.Labels["network"]
	st.deps.Dialer.NetworkChanged(ctx, e.ContainerID, why)
}
