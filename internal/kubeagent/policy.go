package kubeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"

	"github.com/clawker/clawker/internal/consts"
)

// The namespace's agent NetworkPolicies: isolation admits the CP, and
// quarantine selects contained agents with nothing admitted (policies only
// ever add what they admit, so a contained pod must leave isolation's
// selector rather than meet a second, denying policy).
const (
	PolicyName     = "clawker-agent-isolation"
	QuarantineName = "clawker-agent-quarantine"
)

// IsolationPolicy confines every agent pod of a namespace to the control
// plane: the only traffic in is the CP dialing the Session port, and the
// only traffic out is to the CP's agent ports (cpPorts) and its egress
// gateway (DNS and proxy). Agents never reach each other or the cluster,
// and the internet only as the gateway allows. cp is the CP: its pods (a selector:
// policies see a Service's traffic after it reached a pod), or an IP block
// for a CP outside the cluster.
// Most policy controllers, kube-router among them, always admit traffic
// from the pod's own node; that is the CP on the host's way in.
func IsolationPolicy(namespace string, cp networkingv1.NetworkPolicyPeer, cpPorts ...int) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	port := func(proto *corev1.Protocol, p int) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(int32(p))
		return networkingv1.NetworkPolicyPort{Protocol: proto, Port: &v}
	}
	peer := []networkingv1.NetworkPolicyPeer{cp}
	out := []networkingv1.NetworkPolicyPort{port(&udp, consts.PortEgressDNS), port(&tcp, consts.PortEgressDNS), port(&tcp, consts.PortEgressProxy)}
	for _, p := range cpPorts {
		out = append(out, port(&tcp, p))
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Namespace: namespace,
			Labels: map[string]string{consts.LabelManaged: "true"}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: agentSelector(metav1.LabelSelectorOpDoesNotExist),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peer, Ports: []networkingv1.NetworkPolicyPort{port(&tcp, consts.PortSession)}}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: peer, Ports: out}},
		},
	}
}

// EnsureIsolation creates the namespace's isolation policy and its
// quarantine policy, or brings existing ones back to what they must be.
func EnsureIsolation(ctx context.Context, api networkingv1client.NetworkPoliciesGetter, want *networkingv1.NetworkPolicy) error {
	for _, p := range []*networkingv1.NetworkPolicy{QuarantinePolicy(want.Namespace), want} {
		if err := ensurePolicy(ctx, api, p); err != nil {
			return err
		}
	}
	return nil
}

func ensurePolicy(ctx context.Context, api networkingv1client.NetworkPoliciesGetter, want *networkingv1.NetworkPolicy) error {
	pols := api.NetworkPolicies(want.Namespace)
	got, err := pols.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := pols.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create network policy %s/%s: %w", want.Namespace, want.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get network policy %s/%s: %w", want.Namespace, want.Name, err)
	case equality.Semantic.DeepEqual(got.Spec, want.Spec):
		return nil
	}
	got.Spec = want.Spec
	if _, err := pols.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update network policy %s/%s: %w", want.Namespace, want.Name, err)
	}
	return nil
}

// QuarantinePolicy isolates the namespace's contained agent pods from
// everything, the CP included.
func QuarantinePolicy(namespace string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: QuarantineName, Namespace: namespace,
			Labels: map[string]string{consts.LabelManaged: "true"}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: agentSelector(metav1.LabelSelectorOpExists),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
}

// agentSelector selects agent pods with (Exists) or without (DoesNotExist)
// the contained label.
func agentSelector(contained metav1.LabelSelectorOperator) metav1.LabelSelector {
	return metav1.LabelSelector{
		MatchLabels:      map[string]string{consts.LabelPurpose: consts.PurposeAgent},
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: consts.LabelContained, Operator: contained}},
	}
}

// IPPeer is a CP outside the cluster, at ip.
func IPPeer(ip netip.Addr) networkingv1.NetworkPolicyPeer {
	ip = ip.Unmap()
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(ip, ip.BitLen()).String()}}
}

// ErrNotQuarantinable: the namespace's policies would not cut off a
// contained agent (the quarantine policy is missing or altered, or the
// isolation policy predates it and still admits contained agents).
var ErrNotQuarantinable = errors.New("the namespace's NetworkPolicies cannot quarantine an agent")

// CheckQuarantine verifies that labelling an agent contained cuts it off:
// the quarantine policy selects contained agents and admits nothing, and
// the isolation policy no longer selects them. A detach is refused
// otherwise, rather than leaving an agent as open as before.
func CheckQuarantine(ctx context.Context, api networkingv1client.NetworkPoliciesGetter, namespace string) error {
	pols := api.NetworkPolicies(namespace)
	q, err := pols.Get(ctx, QuarantineName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotQuarantinable, err)
	}
	if !equality.Semantic.DeepEqual(q.Spec, QuarantinePolicy(namespace).Spec) {
		return fmt.Errorf("%w: %s/%s was altered", ErrNotQuarantinable, namespace, QuarantineName)
	}
	iso, err := pols.Get(ctx, PolicyName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotQuarantinable, err)
	}
	if !equality.Semantic.DeepEqual(iso.Spec.PodSelector, agentSelector(metav1.LabelSelectorOpDoesNotExist)) {
		return fmt.Errorf("%w: %s/%s still selects contained agents", ErrNotQuarantinable, namespace, PolicyName)
	}
	return nil
}
