package kubecp

import (
	"context"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/clawker/clawker/internal/consts"
)

func spec() Spec {
	keys := map[string][]byte{}
	for _, f := range KeyFiles {
		keys[f] = []byte("pem of " + f)
	}
	return Spec{Namespace: "agents", Image: "clawker-cp:e2e", Keys: keys, VolumeName: "pv-1",
		Env: map[string]string{"CLAWKER_CP_LOG_LEVEL": "debug", "CLAWKER_CP_EGRESS_UPSTREAM_DNS": "10.96.0.53:53"}}
}

func TestBuildHoldsOnlyWhatTheCPNeeds(t *testing.T) {
	o, err := Build(spec())
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Keys.Data) != 6 || len(o.Keys.Data[consts.EgressCAKeyFile]) == 0 {
		t.Fatalf("key secret holds %d files, want the 6 CP files (the gateway's CA among them)", len(o.Keys.Data))
	}
	for name := range o.Keys.Data {
		if name == consts.CAKeyFile || name == consts.SigningKeyFile {
			t.Fatalf("the CP's Secret holds %s: the CA and signing keys never leave the CLI home", name)
		}
	}
	rules := o.Role.Rules
	if len(rules) != 2 || !slices.Equal(rules[1].Resources, []string{"networkpolicies"}) || !slices.Equal(rules[1].Verbs, []string{"get"}) ||
		!slices.Equal(rules[0].Resources, []string{"pods"}) || !slices.Equal(rules[0].Verbs, []string{"get", "list", "watch", "patch", "delete"}) {
		t.Fatalf("role %+v: want pods only, read and contain", rules)
	}
	d := o.Deployment.Spec
	if *d.Replicas != 1 || d.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Fatal("one CP at a time: one replica, recreated (sqlite has one writer)")
	}
	args := strings.Join(d.Template.Spec.Containers[0].Command, " ")
	if !strings.Contains(args, "--runtime=kubernetes") || !strings.Contains(args, "--namespace=agents") {
		t.Fatalf("command %q", args)
	}
	c := d.Template.Spec.Containers[0]
	if len(c.Env) != 2 || c.Env[0].Name != "CLAWKER_CP_EGRESS_UPSTREAM_DNS" || c.Env[0].Value != "10.96.0.53:53" {
		t.Fatalf("env %+v: want the passed settings, in name order", c.Env)
	}
	// The gateway is served to agents by the Service: DNS on both
	// protocols and the proxy.
	var svc []string
	for _, p := range o.Service.Spec.Ports {
		svc = append(svc, string(p.Protocol)+"/"+p.TargetPort.String())
	}
	for _, want := range []string{"UDP/dns", "TCP/dns-tcp", "/proxy"} {
		if !slices.Contains(svc, want) {
			t.Fatalf("service ports %v lack %s", svc, want)
		}
	}
	if o.Data.Spec.VolumeName != "pv-1" || o.Data.Spec.StorageClassName == nil || *o.Data.Spec.StorageClassName != "" {
		t.Fatalf("claim %+v: want bound to the named volume", o.Data.Spec)
	}
	s := spec()
	delete(s.Keys, consts.CPKeyFile)
	if _, err := Build(s); err == nil {
		t.Fatal("built without the CP key")
	}
}

func TestApplyCreatesThenUpdates(t *testing.T) {
	cs := fake.NewClientset()
	o, err := Build(spec())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Apply(ctx, cs, o); err != nil {
		t.Fatal(err)
	}
	s := spec()
	s.Image = "clawker-cp:v2"
	s.Keys[consts.CPCertFile] = []byte("rotated")
	o2, _ := Build(s)
	if err := Apply(ctx, cs, o2); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	dep, err := cs.AppsV1().Deployments("agents").Get(ctx, Name, metav1.GetOptions{})
	if err != nil || dep.Spec.Template.Spec.Containers[0].Image != "clawker-cp:v2" {
		t.Fatalf("deployment not updated: %v", err)
	}
	sec, err := cs.CoreV1().Secrets("agents").Get(ctx, Name+"-keys", metav1.GetOptions{})
	if err != nil || string(sec.Data[consts.CPCertFile]) != "rotated" {
		t.Fatalf("keys not replaced: %v", err)
	}
	if _, err := cs.CoreV1().Services("agents").Get(ctx, Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestReapplyKeepsServiceIPAndRecordsClawkerdImage(t *testing.T) {
	cs := fake.NewClientset()
	ctx := context.Background()
	o, _ := Build(spec())
	if err := Apply(ctx, cs, o); err != nil {
		t.Fatal(err)
	}
	svc, _ := cs.CoreV1().Services("agents").Get(ctx, Name, metav1.GetOptions{})
	svc.Spec.ClusterIP = "10.96.0.7" // as the API server assigns it
	if _, err := cs.CoreV1().Services("agents").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := spec()
	s.ClawkerdImage = "clawkerd:v2"
	o2, _ := Build(s)
	if err := Apply(ctx, cs, o2); err != nil {
		t.Fatal(err)
	}
	svc, _ = cs.CoreV1().Services("agents").Get(ctx, Name, metav1.GetOptions{})
	if svc.Annotations[ClawkerdImageAnnotation] != "clawkerd:v2" || svc.Spec.ClusterIP != "10.96.0.7" {
		t.Fatalf("service after re-apply: annotations %v, IP %q: want the new clawkerd image and the same IP", svc.Annotations, svc.Spec.ClusterIP)
	}
	// A re-apply that names no clawkerd image keeps the recorded one.
	o3, _ := Build(spec())
	if err := Apply(ctx, cs, o3); err != nil {
		t.Fatal(err)
	}
	svc, _ = cs.CoreV1().Services("agents").Get(ctx, Name, metav1.GetOptions{})
	if svc.Annotations[ClawkerdImageAnnotation] != "clawkerd:v2" {
		t.Fatalf("annotations %v: the recorded clawkerd image was dropped", svc.Annotations)
	}
}

// New keys change the pod template, so the Deployment rolls the CP,
// which reads them only at start.
func TestNewKeysRollTheCP(t *testing.T) {
	a, _ := Build(spec())
	s := spec()
	s.Keys[consts.CACertFile] = []byte("another CA")
	b, _ := Build(s)
	ka, kb := a.Deployment.Spec.Template.Annotations[KeysAnnotation], b.Deployment.Spec.Template.Annotations[KeysAnnotation]
	if ka == "" || ka == kb {
		t.Fatalf("template key hashes %q, %q: want set, and different for different keys", ka, kb)
	}
	one := int32(1)
	d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: &one}}
	d.Generation = 2
	for _, tc := range []struct {
		st   appsv1.DeploymentStatus
		want bool
	}{
		{appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1}, true},
		{appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1}, false}, // not seen yet
		{appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 1, ReadyReplicas: 1}, false}, // the old pod still there
		{appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 0}, false},
	} {
		d.Status = tc.st
		if got := Rolled(d); got != tc.want {
			t.Errorf("Rolled(%+v) = %v, want %v", tc.st, got, tc.want)
		}
	}
}

func TestDeleteKeepsTheRegistryUnlessAsked(t *testing.T) {
	cs := fake.NewClientset()
	ctx := context.Background()
	o, _ := Build(spec())
	if err := Apply(ctx, cs, o); err != nil {
		t.Fatal(err)
	}
	if err := Delete(ctx, cs, "agents", false); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().Deployments("agents").Get(ctx, Name, metav1.GetOptions{}); err == nil {
		t.Fatal("deployment left after delete")
	}
	if _, err := cs.CoreV1().Secrets("agents").Get(ctx, Name+"-keys", metav1.GetOptions{}); err == nil {
		t.Fatal("keys left after delete")
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims("agents").Get(ctx, Name+"-data", metav1.GetOptions{}); err != nil {
		t.Fatalf("registry claim deleted without withData: %v", err)
	}
	// Twice, and with the data: what is gone already is no error.
	if err := Delete(ctx, cs, "agents", true); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims("agents").Get(ctx, Name+"-data", metav1.GetOptions{}); err == nil {
		t.Fatal("registry claim kept with withData")
	}
}
