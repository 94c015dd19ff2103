package kube

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/cli"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubecp"
	"github.com/clawker/clawker/internal/testenv"
)

// TestAgentsWithCPInCluster runs the scenario under a CP deployed into the
// cluster (internal/kubecp): a one-replica Deployment with its own service
// account and Role, keys from a Secret, the registry on a
// PersistentVolume, agents reaching it through its Service. Its restart
// is the pod's deletion: the Deployment makes a new one on the same volume.
func TestAgentsWithCPInCluster(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	agentScenario(t, c, ns, deployCP(t, c, ns))
}

// registryPV is a PersistentVolume for the CP's registry in ns: a
// directory of this host, deleted at the end.
func registryPV(t *testing.T, c *cluster, ns string) string {
	t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-cp-data", Labels: map[string]string{consts.LabelTest: testLabel}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: t.TempDir()}},
		},
	}
	if _, err := c.kube.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.kube.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})
	return pv.Name
}

// clusterCP is the CP as a Deployment in ns.
type clusterCP struct {
	top       *testing.T // the test the admin connections close with
	c         *cluster
	ns        string
	home      auth.Home
	serviceIP string
	pod       *corev1.Pod // the current CP pod
	client    *cpClient
}

func deployCP(t *testing.T, c *cluster, ns string) *clusterCP {
	t.Helper()
	ctx := context.Background()
	home := auth.Home{Dir: t.TempDir()}
	if _, err := home.Init(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := cli.EnsureEgressCA(home); err != nil { // as cp up does
		t.Fatal(err)
	}
	keys := map[string][]byte{}
	for _, f := range kubecp.KeyFiles {
		b, err := os.ReadFile(home.Path(f))
		if err != nil {
			t.Fatal(err)
		}
		keys[f] = b
	}
	pv := registryPV(t, c, ns)
	objs, err := kubecp.Build(kubecp.Spec{Namespace: ns, Image: cpImage, Keys: keys, VolumeName: pv})
	if err != nil {
		t.Fatal(err)
	}
	if err := kubecp.Apply(ctx, c.kube, objs); err != nil {
		t.Fatal(err)
	}
	svc, err := c.kube.CoreV1().Services(ns).Get(ctx, kubecp.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := &clusterCP{top: t, c: c, ns: ns, home: home, serviceIP: svc.Spec.ClusterIP}
	p.waitReady(t, "")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("in-cluster clawker-cp log:\n%s", p.log(t))
		}
	})
	return p
}

func (p *clusterCP) agentAddr() string {
	return net.JoinHostPort(p.serviceIP, strconv.Itoa(consts.PortAgent))
}
func (p *clusterCP) tokenURL() string {
	return fmt.Sprintf("https://%s%s", net.JoinHostPort(p.serviceIP, strconv.Itoa(consts.PortToken)), consts.TokenPath)
}
func (p *clusterCP) peer() *networkingv1.NetworkPolicyPeer { peer := kubecp.AgentPeer(); return &peer }
func (p *clusterCP) keys() auth.Home                       { return p.home }
func (p *clusterCP) api() *cpClient                        { return p.client }

// waitReady waits for a ready CP pod other than the one with UID old, and
// connects to it: admin through the Service, /metrics at the pod.
func (p *clusterCP) waitReady(t *testing.T, old string) {
	t.Helper()
	ctx := context.Background()
	testenv.Eventually(t, 3*time.Minute, "the CP pod ready", func() error {
		pods, err := p.c.kube.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{LabelSelector: kubecp.AppLabel + "=" + kubecp.Name})
		if err != nil {
			return err
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if string(pod.UID) == old || pod.DeletionTimestamp != nil {
				continue
			}
			for _, cond := range pod.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					p.pod = pod
					return nil
				}
			}
			return fmt.Errorf("CP pod %s: %s", pod.Name, p.c.podStatus(ctx, p.ns, pod.Name))
		}
		return fmt.Errorf("no CP pod yet")
	})
	p.client = dialAdmin(p.top, p.home, net.JoinHostPort(p.serviceIP, strconv.Itoa(consts.PortAdmin)),
		net.JoinHostPort(p.pod.Status.PodIP, strconv.Itoa(consts.PortHealth)))
}

// restart deletes the CP pod; the Deployment replaces it on the same volume.
func (p *clusterCP) restart(t *testing.T) {
	t.Helper()
	old := p.pod
	if err := p.c.kube.CoreV1().Pods(p.ns).Delete(context.Background(), old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p.waitReady(t, string(old.UID))
}

func (p *clusterCP) log(t *testing.T) string {
	if p.pod == nil {
		return ""
	}
	rc, err := p.c.kube.CoreV1().Pods(p.ns).GetLogs(p.pod.Name, &corev1.PodLogOptions{}).Stream(context.Background())
	if err != nil {
		return "log: " + err.Error()
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}
