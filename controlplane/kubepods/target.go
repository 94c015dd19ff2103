package kubepods

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// byID returns the cached pod whose workload ID is id, or nil.
func (p *Pods) byID(id string) (*corev1.Pod, error) {
	if !p.Synced() {
		return nil, ErrNotSynced
	}
	objs, err := p.informer.GetIndexer().ByIndex(byWorkload, id)
	if err != nil {
		return nil, fmt.Errorf("kubepods: workload index: %w", err)
	}
	for _, o := range objs {
		if pod, ok := o.(*corev1.Pod); ok {
			return pod, nil
		}
	}
	return nil, nil
}

// DialTarget is the agent.Resolver for pods: the pod IP on the Session
// port. The dialer pins the peer's identity by its cert, so the cache's
// answer only says where to knock.
func (p *Pods) DialTarget(_ context.Context, id string) (agent.DialTarget, error) {
	pod, err := p.byID(id)
	switch {
	case err != nil:
		return agent.DialTarget{}, err
	case pod == nil:
		return agent.DialTarget{}, fmt.Errorf("%w: no agent pod for %s", agent.ErrContainerGone, id)
	}
	t := agent.DialTarget{}
	t.AgentName, t.Project = auth.LabelIdentity(pod.Labels)
	if !running(pod) {
		return t, agent.ErrContainerNotRunning
	}
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil {
		return t, fmt.Errorf("pod %s has no IP yet", pod.Name)
	}
	t.Address = netip.AddrPortFrom(ip.Unmap(), consts.PortSession).String()
	return t, nil
}

// AgentContainerInventory lists every agent pod's workload ID and the
// running ones (agent.AgentInventory), from the cache.
func (p *Pods) AgentContainerInventory(context.Context) (all, run []string, err error) {
	if !p.Synced() {
		return nil, nil, ErrNotSynced
	}
	for _, o := range p.informer.GetStore().List() {
		pod, ok := o.(*corev1.Pod)
		if !ok || pod.UID == "" {
			continue
		}
		id := auth.PodWorkloadID(string(pod.UID))
		all = append(all, id)
		if running(pod) {
			run = append(run, id)
		}
	}
	return all, run, nil
}

// ListAgentContainerIDs implements agent.ContainerLister.
func (p *Pods) ListAgentContainerIDs(ctx context.Context) ([]string, error) {
	all, _, err := p.AgentContainerInventory(ctx)
	return all, err
}

// ListRunningAgentContainerIDs implements agent.RunningAgentLister.
func (p *Pods) ListRunningAgentContainerIDs(ctx context.Context) ([]string, error) {
	_, run, err := p.AgentContainerInventory(ctx)
	return run, err
}

// ContainerLabels returns an agent pod's labels as first seen (the
// credential gate's question): a later patch cannot opt a live pod in.
func (p *Pods) ContainerLabels(_ context.Context, id string) (map[string]string, error) {
	pod, err := p.byID(id)
	if err != nil {
		return nil, err
	}
	if pod == nil {
		return nil, fmt.Errorf("no agent pod for %s", id)
	}
	p.mu.Lock()
	l, ok := p.firstLabels[pod.UID]
	p.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("agent pod %s not seen by the feed yet", pod.Name)
	}
	return l, nil
}

// The pod view answers every question the agent package asks of a runtime.
var (
	_ agent.ContainerByPeerIP  = (*Pods)(nil)
	_ agent.AgentInventory     = (*Pods)(nil)
	_ agent.ContainerLister    = (*Pods)(nil)
	_ agent.RunningAgentLister = (*Pods)(nil)
	_ agent.Resolver           = (*Pods)(nil).DialTarget
)
