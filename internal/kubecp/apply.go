package kubecp

import (
	"bytes"
	"context"
	"fmt"
	"maps"

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
		{"service", func() error { _, err := core.Services(ns).Create(ctx, o.Service, metav1.CreateOptions{}); return err }, nil},
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
