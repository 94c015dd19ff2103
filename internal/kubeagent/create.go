package kubeagent

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"

	"github.com/clawker/clawker/internal/auth"
)

// Clients are the API groups an agent pod is made with.
type Clients struct {
	Core       corev1client.CoreV1Interface
	Networking networkingv1client.NetworkingV1Interface
}

// Create makes the agent pod, then mints its identity for the UID the API
// server gave it and stores it in the pod's bootstrap Secret. The cert
// can only be minted once the pod exists; the containers wait for the
// Secret's volume, so none starts without its identity. The namespace's
// isolation policy is in place before the pod exists. On failure the pod
// is deleted: nothing half-made is left.
func Create(ctx context.Context, c Clients, ca *auth.CA, signer *ecdsa.PrivateKey, s Spec, now time.Time) (*corev1.Pod, error) {
	spec, err := Pod(s)
	if err != nil {
		return nil, err
	}
	ip, ports, err := cpPorts(s)
	if err != nil {
		return nil, err
	}
	peer := IPPeer(ip)
	if s.CPPeer != nil {
		peer = *s.CPPeer
	}
	if err := EnsureIsolation(ctx, c.Networking, IsolationPolicy(s.Namespace, peer, ports...)); err != nil {
		return nil, err
	}
	pod, err := c.Core.Pods(s.Namespace).Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s: %w", spec.Name, err)
	}
	if err := storeBootstrap(ctx, c.Core, ca, signer, s, pod, now); err != nil {
		// The pod owns nothing yet; its own delete is the whole cleanup.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		derr := c.Core.Pods(s.Namespace).Delete(dctx, pod.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if derr != nil {
			return nil, errors.Join(err, fmt.Errorf("delete pod %s after the failure: %w", pod.Name, derr))
		}
		return nil, err
	}
	return pod, nil
}

// cpPorts is where the policy lets agents go: the CP's address and its
// agent and token ports, from the addresses the pod is given.
func cpPorts(s Spec) (netip.Addr, []int, error) {
	agent, err := netip.ParseAddrPort(s.CPAgentAddr)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("control plane agent address %q: want IP:port: %w", s.CPAgentAddr, err)
	}
	u, err := url.Parse(s.CPTokenURL)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("token URL %q: %w", s.CPTokenURL, err)
	}
	tokenIP, err := netip.ParseAddr(u.Hostname())
	if err != nil || tokenIP != agent.Addr() {
		return netip.Addr{}, nil, fmt.Errorf("token URL %q: want the agent address's IP", s.CPTokenURL)
	}
	tokenPort, err := strconv.Atoi(u.Port())
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("token URL %q: no port", s.CPTokenURL)
	}
	return agent.Addr(), []int{int(agent.Port()), tokenPort}, nil
}

func storeBootstrap(ctx context.Context, api corev1client.CoreV1Interface, ca *auth.CA, signer *ecdsa.PrivateKey, s Spec, pod *corev1.Pod, now time.Time) error {
	leaf, err := ca.MintAgentPod(s.Project, s.Agent, string(pod.UID), now)
	if err != nil {
		return fmt.Errorf("mint agent certificate: %w", err)
	}
	b, err := ca.MintBootstrap(signer, leaf, auth.PodWorkloadID(string(pod.UID)), now)
	if err != nil {
		return err
	}
	secrets := api.Secrets(s.Namespace)
	sec := Secret(pod, b, s.EgressCA)
	_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// A same-named agent's Secret the garbage collector has not
		// removed yet: the new pod must never mount it. Only a Secret owned
		// by another pod is replaced.
		if err = replaceStale(ctx, secrets, sec, pod); err == nil {
			_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("create bootstrap secret for %s: %w", pod.Name, err)
	}
	return nil
}

func replaceStale(ctx context.Context, secrets corev1client.SecretInterface, sec *corev1.Secret, pod *corev1.Pod) error {
	old, err := secrets.Get(ctx, sec.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	owned := len(old.OwnerReferences) == 1 && old.OwnerReferences[0].Kind == "Pod"
	if !owned || old.OwnerReferences[0].UID == pod.UID {
		return fmt.Errorf("secret %s exists and is not a former pod's bootstrap", sec.Name)
	}
	return secrets.Delete(ctx, sec.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &old.UID}})
}
