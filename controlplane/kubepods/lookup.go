package kubepods

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/auth"
)

// LookupByIP resolves a live mTLS peer IP to the one agent pod owning it
// (peerid.Resolver). One API call per lookup: a GET of the pod the index
// names, or, when the index names none or several, one fresh list by
// status.podIP. Identity comes from that answer, never from the cache.
func (p *Pods) LookupByIP(ctx context.Context, ip netip.Addr) (peerid.Container, error) {
	ip = ip.Unmap()
	c, err := p.lookup(ctx, ip)
	if err != nil {
		p.log.Warn().Err(err).Str("event", "peer_lookup_failed").Str("peer_ip", ip.String()).Msg("pod peer lookup failed")
		return peerid.Container{}, err
	}
	return c, nil
}

func (p *Pods) lookup(ctx context.Context, ip netip.Addr) (peerid.Container, error) {
	if cands := p.indexed(ip); len(cands) == 1 && p.Synced() {
		cached := cands[0]
		pod, err := p.client.Pods(p.namespace).Get(ctx, cached.Name, metav1.GetOptions{})
		switch {
		case err == nil && pod.UID == cached.UID && eligible(pod) && hasIP(pod, ip):
			return identity(pod)
		case err != nil && !apierrors.IsNotFound(err):
			return peerid.Container{}, fmt.Errorf("peer %s: get pod %s: %w", ip, cached.Name, err)
		}
		// The cache was stale (pod gone, replaced or moved): ask afresh.
	}
	return p.fresh(ctx, ip)
}

// indexed returns the cached eligible pods that claim ip.
func (p *Pods) indexed(ip netip.Addr) []*corev1.Pod {
	objs, err := p.informer.GetIndexer().ByIndex(byPodIP, ip.String())
	if err != nil {
		return nil
	}
	var out []*corev1.Pod
	for _, o := range objs {
		if pod, ok := o.(*corev1.Pod); ok && eligible(pod) {
			out = append(out, pod)
		}
	}
	return out
}

// fresh lists the agent pods the API server says hold ip. Two is
// ambiguous and fails closed, as on Docker.
func (p *Pods) fresh(ctx context.Context, ip netip.Addr) (peerid.Container, error) {
	list, err := p.client.Pods(p.namespace).List(ctx, metav1.ListOptions{
		LabelSelector: p.selector,
		FieldSelector: fields.OneTermEqualSelector("status.podIP", ip.String()).String(),
	})
	if err != nil {
		return peerid.Container{}, fmt.Errorf("peer %s: list pods: %w", ip, err)
	}
	var match []*corev1.Pod
	for i := range list.Items {
		if pod := &list.Items[i]; eligible(pod) && hasIP(pod, ip) {
			match = append(match, pod)
		}
	}
	switch len(match) {
	case 0:
		return peerid.Container{}, fmt.Errorf("peer %s: %w", ip, peerid.ErrNoContainerForPeerIP)
	case 1:
		return identity(match[0])
	default:
		return peerid.Container{}, fmt.Errorf("peer %s: %d pods: %w", ip, len(match), peerid.ErrAmbiguousPeerIP)
	}
}

// identity is the pod's agent identity from its (API-confirmed) labels.
func identity(pod *corev1.Pod) (peerid.Container, error) {
	project, name, err := peerid.ParseAgentLabels(pod.Labels)
	if err != nil {
		return peerid.Container{}, fmt.Errorf("pod %s: %w", pod.Name, err)
	}
	return peerid.Container{ContainerID: auth.PodWorkloadID(string(pod.UID)), Project: project, AgentName: name}, nil
}
