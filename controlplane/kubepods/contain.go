package kubepods

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubeagent"
)

// Containment is admin.Containment for agent pods. Detach labels the pod
// contained: the namespace's policies (kubeagent.EnsureIsolation) then
// admit no traffic to or from it, the CP's included, as a detach from its
// agent network does on Docker; it is refused when those policies would
// not do it. Kill deletes the pod at once. A pod cannot be paused.
type Containment struct {
	p    *Pods
	nets networkingv1client.NetworkPoliciesGetter
}

// Containment returns the pod view's containment actions; nets reads the
// namespace's policies a detach relies on.
func (p *Pods) Containment(nets networkingv1client.NetworkPoliciesGetter) Containment {
	return Containment{p: p, nets: nets}
}

// Detach implements admin.Containment.
func (c Containment) Detach(ctx context.Context, t admin.Target) error {
	name, uid, err := c.pod(t)
	if err != nil {
		return err
	}
	if err := kubeagent.CheckQuarantine(ctx, c.nets, c.p.namespace); err != nil {
		return fmt.Errorf("network-detach: %w", err)
	}
	patch := fmt.Sprintf(`{"metadata":{"uid":%q,"labels":{%q:%q}}}`, uid, consts.LabelContained, "network-detach")
	_, err = c.p.client.Pods(c.p.namespace).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("label pod %s contained: %w", name, err)
	}
	return nil
}

// Pause implements admin.Containment: Kubernetes has no pause.
func (Containment) Pause(context.Context, admin.Target) error {
	return fmt.Errorf("pause: %w (a pod cannot be frozen; use network-detach or kill)", admin.ErrUnsupported)
}

// Kill implements admin.Containment.
func (c Containment) Kill(ctx context.Context, t admin.Target) error {
	name, uid, err := c.pod(t)
	if err != nil {
		return err
	}
	zero := int64(0)
	err = c.p.client.Pods(c.p.namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero,
		Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil {
		return fmt.Errorf("delete pod %s: %w", name, err)
	}
	return nil
}

// pod names the target's pod from the cache; the UID rides along so the
// action cannot land on a same-named successor.
func (c Containment) pod(t admin.Target) (string, types.UID, error) {
	pod, err := c.p.byID(t.ContainerID)
	if err != nil {
		return "", "", err
	}
	if pod == nil {
		return "", "", fmt.Errorf("no agent pod for %s", t.ContainerID)
	}
	return pod.Name, pod.UID, nil
}

var _ admin.Containment = Containment{}
