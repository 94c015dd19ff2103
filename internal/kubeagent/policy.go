package kubeagent

import (
	"context"
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

// PolicyName is the namespace's agent isolation NetworkPolicy.
const PolicyName = "clawker-agent-isolation"

// IsolationPolicy confines every agent pod of a namespace to the control
// plane: the only traffic in is the CP dialing the Session port, and the
// only traffic out is to the CP's agent ports. Agents never reach each
// other, the cluster or the internet. cp is the CP: its pods (a selector:
// policies see a Service's traffic after it reached a pod), or an IP block
// for a CP outside the cluster.
// Most policy controllers, kube-router among them, always admit traffic
// from the pod's own node; that is the CP on the host's way in.
func IsolationPolicy(namespace string, cp networkingv1.NetworkPolicyPeer, cpPorts ...int) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := func(p int) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(int32(p))
		return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &v}
	}
	peer := []networkingv1.NetworkPolicyPeer{cp}
	var out []networkingv1.NetworkPolicyPort
	for _, p := range cpPorts {
		out = append(out, port(p))
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: PolicyName, Namespace: namespace,
			Labels: map[string]string{consts.LabelManaged: "true"}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{consts.LabelPurpose: consts.PurposeAgent}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peer, Ports: []networkingv1.NetworkPolicyPort{port(consts.PortSession)}}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: peer, Ports: out}},
		},
	}
}

// EnsureIsolation creates the namespace's isolation policy, or brings an
// existing one back to want.
func EnsureIsolation(ctx context.Context, api networkingv1client.NetworkPoliciesGetter, want *networkingv1.NetworkPolicy) error {
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

// IPPeer is a CP outside the cluster, at ip.
func IPPeer(ip netip.Addr) networkingv1.NetworkPolicyPeer {
	ip = ip.Unmap()
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(ip, ip.BitLen()).String()}}
}
