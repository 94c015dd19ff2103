package peerid

import (
	"fmt"
	"net/netip"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// agentIP returns the container's clawker-net IP if it is a running
// purpose=agent container, else the zero Addr.
func (m *Index) agentIP(c container.InspectResponse) netip.Addr {
	if c.State == nil || !c.State.Running || c.State.Restarting {
		return netip.Addr{}
	}
	if c.Config == nil || c.Config.Labels[consts.LabelPurpose] != m.purpose {
		return netip.Addr{}
	}
	if c.NetworkSettings == nil {
		return netip.Addr{}
	}
	return m.endpointIP(c.Config.Labels, c.NetworkSettings.Networks)
}

func endpointIP(nets map[string]*network.EndpointSettings, name string) netip.Addr {
	ep := nets[name]
	if ep == nil || !ep.IPAddress.IsValid() {
		return netip.Addr{}
	}
	return ep.IPAddress.Unmap()
}

// ParseAgentLabels derives the typed identity from an agent workload's labels. A
// missing or malformed agent label, or a malformed project label, is
// ErrInvalidAgentLabel; a missing (or empty) project label is the global
// agent case and yields the zero slug.
func ParseAgentLabels(labels map[string]string) (auth.ProjectSlug, auth.AgentName, error) {
	raw, ok := labels[consts.LabelAgent]
	if !ok {
		return auth.ProjectSlug{}, auth.AgentName{}, fmt.Errorf("%w: %s missing", ErrInvalidAgentLabel, consts.LabelAgent)
	}
	name, err := auth.NewAgentName(raw)
	if err != nil {
		return auth.ProjectSlug{}, auth.AgentName{}, fmt.Errorf("%w: %v", ErrInvalidAgentLabel, err)
	}
	project, err := auth.NewProjectSlug(labels[consts.LabelProject])
	if err != nil {
		return auth.ProjectSlug{}, auth.AgentName{}, fmt.Errorf("%w: %v", ErrInvalidAgentLabel, err)
	}
	return project, name, nil
}

// endpointIP is the IP an agent container's peer address must equal: its
// endpoint on its own agent network (named from its labels), which only
// it and the CP share. An address on any other network (clawker-net, a
// user network) never counts, so a container with copied labels elsewhere
// resolves to nothing.
func (m *Index) endpointIP(labels map[string]string, nets map[string]*network.EndpointSettings) netip.Addr {
	name := m.network
	if name == "" {
		n, ok := agentnet.NameFromLabels(labels)
		if !ok {
			return netip.Addr{}
		}
		name = n
	}
	return endpointIP(nets, name)
}
