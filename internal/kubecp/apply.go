package kubecp

import (
	"bytes"
	"context"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Apply creates the CP's objects, or brings existing ones to o. The
// claim is left as it is once made (its size and volume are immutable),
// and the immutable key Secret is replaced only when the keys changed.
func Apply(ctx context.Context, api kubernetes.Interface, o Objects) error {
	ns := o.Deployment.Namespace
	core, rbac, apps := api.CoreV1(), api.RbacV1(), api.AppsV1()
	steps := []struct {
		what           string
		create, update func() error
	}{
		{"service account", func() error {
			_, err := core.ServiceAccounts(ns).Create(ctx, o.ServiceAccount, metav1.CreateOptions{})
			return err
		}, nil},
		{"role", func() error { _, err := rbac.Roles(ns).Create(ctx, o.Role, metav1.CreateOptions{}); return err },
			func() error { _, err := rbac.Roles(ns).Update(ctx, o.Role, metav1.UpdateOptions{}); return err }},
		{"role binding", func() error {
			_, err := rbac.RoleBindings(ns).Create(ctx, o.RoleBinding, metav1.CreateOptions{})
			return err
		}, nil},
		{"keys", func() error { _, err := core.Secrets(ns).Create(ctx, o.Keys, metav1.CreateOptions{}); return err },
			func() error { return replaceKeys(ctx, api, o) }},
		{"registry claim", func() error {
			_, err := core.PersistentVolumeClaims(ns).Create(ctx, o.Data, metav1.CreateOptions{})
			return err
		}, nil},
		{"deployment", func() error {
			_, err := apps.Deployments(ns).Create(ctx, o.Deployment, metav1.CreateOptions{})
			return err
		},
			func() error {
				_, err := apps.Deployments(ns).Update(ctx, o.Deployment, metav1.UpdateOptions{})
				return err
			}},
		{"service", func() error { _, err := core.Services(ns).Create(ctx, o.Service, metav1.CreateOptions{}); return err },
			func() error { return updateService(ctx, api, o) }},
	}
	for _, s := range steps {
		err := s.create()
		if apierrors.IsAlreadyExists(err) && s.update != nil {
			err = s.update()
		} else if apierrors.IsAlreadyExists(err) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("control plane %s in %s: %w", s.what, ns, err)
		}
	}
	return nil
}

// updateService brings an existing Service's ports, selector and
// annotations to o; its cluster IP stays, so running agents keep their
// address.
func updateService(ctx context.Context, api kubernetes.Interface, o Objects) error {
	svcs := api.CoreV1().Services(o.Service.Namespace)
	old, err := svcs.Get(ctx, o.Service.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	// Merged: a re-apply that names no clawkerd image keeps the recorded
	// one, and other tools' keys stay.
	old.Annotations = merged(old.Annotations, o.Service.Annotations)
	old.Labels = merged(old.Labels, o.Service.Labels)
	old.Spec.Ports, old.Spec.Selector = o.Service.Spec.Ports, o.Service.Spec.Selector
	_, err = svcs.Update(ctx, old, metav1.UpdateOptions{})
	return err
}

func merged(into, from map[string]string) map[string]string {
	if into == nil {
		into = map[string]string{}
	}
	maps.Copy(into, from)
	return into
}

// Rolled reports whether d runs its current template: observed, every
// replica updated and ready, none of an older template left.
func Rolled(d *appsv1.Deployment) bool {
	st, want := d.Status, int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want && st.ReadyReplicas == want && st.Replicas == want
}

// Delete removes the CP's objects from ns; the registry's claim (and so
// its volume) only when withData. Objects already gone are no error.
func Delete(ctx context.Context, api kubernetes.Interface, ns string, withData bool) error {
	core, rbac, apps := api.CoreV1(), api.RbacV1(), api.AppsV1()
	opts := metav1.DeleteOptions{}
	steps := []struct {
		what string
		del  func() error
	}{
		{"deployment", func() error { return apps.Deployments(ns).Delete(ctx, Name, opts) }},
		{"service", func() error { return core.Services(ns).Delete(ctx, Name, opts) }},
		{"keys", func() error { return core.Secrets(ns).Delete(ctx, Name+"-keys", opts) }},
		{"role binding", func() error { return rbac.RoleBindings(ns).Delete(ctx, Name, opts) }},
		{"role", func() error { return rbac.Roles(ns).Delete(ctx, Name, opts) }},
		{"service account", func() error { return core.ServiceAccounts(ns).Delete(ctx, Name, opts) }},
	}
	if withData {
		steps = append(steps, struct {
			what string
			del  func() error
		}{"registry claim", func() error { return core.PersistentVolumeClaims(ns).Delete(ctx, Name+"-data", opts) }})
	}
	for _, s := range steps {
		if err := s.del(); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete control plane %s in %s: %w", s.what, ns, err)
		}
	}
	return nil
}

func replaceKeys(ctx context.Context, api kubernetes.Interface, o Objects) error {
	secrets := api.CoreV1().Secrets(o.Keys.Namespace)
	old, err := secrets.Get(ctx, o.Keys.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if maps.EqualFunc(old.Data, o.Keys.Data, bytes.Equal) {
		return nil
	}
	if err := secrets.Delete(ctx, o.Keys.Name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	_, err = secrets.Create(ctx, o.Keys, metav1.CreateOptions{})
	return err
}
