package kubecli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/cli"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubecp"
)

// cluster is a fake API server (the Kubernetes API boundary) holding the
// CP's Service; created pods get a UID, as the API server gives them.
func cluster(t *testing.T, objs ...runtime.Object) *fake.Clientset {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: kubecp.Name, Namespace: "agents",
			Annotations: map[string]string{kubecp.ClawkerdImageAnnotation: "clawkerd:recorded"}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9"},
	}
	cs := fake.NewClientset(append([]runtime.Object{svc}, objs...)...)
	n := 0
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		n++
		p.UID = types.UID(fmt.Sprintf("6f1c2a4e-0000-4000-8000-%012d", n))
		return false, nil, nil
	})
	return cs
}

// clawker runs the kubernetes CLI in-process against cs in namespace
// agents, with its own initialised home.
func clawker(t *testing.T, cs *fake.Clientset, home string, args ...string) (string, string, int) {
	t.Helper()
	r := &Runtime{}
	r.once.Do(func() { r.api, r.ns = cs, "agents" })
	var out, errb bytes.Buffer
	code := cli.MainRuntime(r, append([]string{"--home", home}, args...), strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func home(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := (auth.Home{Dir: dir}).Init(time.Now()); err != nil {
		t.Fatal(err)
	}
	// As cp up leaves it: the gateway's CA beside the rest.
	if err := cli.EnsureEgressCA(auth.Home{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunCreatesThePodForTheNamespacesCP(t *testing.T) {
	cs, h := cluster(t), home(t)
	out, errOut, code := clawker(t, cs, h, "run", "-d", "--project", "web", "--agent", "dev", "-e", "MODE=review", "busybox:1", "sleep", "60")
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	ctx := context.Background()
	pod, err := cs.CoreV1().Pods("agents").Get(ctx, "clawker.web.dev", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), auth.PodWorkloadID(string(pod.UID)); got != want {
		t.Fatalf("run -d printed %q, want the agent's workload ID %q (what clawker agents shows)", got, want)
	}
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env[consts.EnvCPAgentAddr] != net.JoinHostPort("10.96.0.9", strconv.Itoa(consts.PortAgent)) {
		t.Fatalf("agent addr %q: want the CP Service's cluster IP", env[consts.EnvCPAgentAddr])
	}
	if !strings.HasPrefix(env[consts.EnvCPTokenURL], "https://10.96.0.9:") || env["MODE"] != "review" {
		t.Fatalf("env %v", env)
	}
	if img := pod.Spec.InitContainers[0].Image; img != "clawkerd:recorded" {
		t.Fatalf("clawkerd image %q: want the one cp up recorded on the Service", img)
	}
	sec, err := cs.CoreV1().Secrets("agents").Get(ctx, "clawker.web.dev-bootstrap", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no bootstrap Secret: %v", err)
	}
	// Egress goes through the CP Service's gateway, which intercepts with
	// the home's CA: the pod carries that CA for clawkerd to install.
	ca, _ := os.ReadFile(filepath.Join(h, consts.EgressCAFile))
	if len(ca) == 0 || !bytes.Equal(sec.Data[consts.BootstrapEgressCA], ca) {
		t.Fatal("the bootstrap Secret lacks the home's egress CA")
	}
	if env["HTTPS_PROXY"] != "http://10.96.0.9:3128" || pod.Spec.DNSConfig == nil || pod.Spec.DNSConfig.Nameservers[0] != "10.96.0.9" {
		t.Fatalf("proxy %q, DNS %+v: want the CP Service's gateway", env["HTTPS_PROXY"], pod.Spec.DNSConfig)
	}
	// The same agent again is refused with the way out.
	_, errOut, code = clawker(t, cs, h, "run", "-d", "--project", "web", "--agent", "dev", "busybox:1", "true")
	if code != cli.ExitUsage || !strings.Contains(errOut, "clawker rm --project web dev") {
		t.Fatalf("second run: exit %d, %q", code, errOut)
	}
}

func TestRunRefusesBeforeTouchingTheCluster(t *testing.T) {
	h := home(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "-d", "--agent", "dev", "busybox:1"}, "give the command after the image"},
		{[]string{"run", "-d", "busybox:1", "true"}, "--agent (or --name) is required"},
		{[]string{"run", "-i", "--agent", "dev", "busybox:1", "sh"}, "needs -t"},
		{[]string{"run", "-d", "--rm", "--agent", "dev", "busybox:1", "sh"}, "--rm needs an attached run"},
		{[]string{"run", "-d", "--agent", "Bad Name", "busybox:1", "sh"}, "invalid --agent"},
		{[]string{"run", "-d", "--agent", "dev", "-e", "CLAWKER_CP_AGENT_ADDR=x", "busybox:1", "sh"}, "CLAWKER_ variables"},
	} {
		cs := cluster(t)
		_, errOut, code := clawker(t, cs, h, tc.args...)
		if code != cli.ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want usage error with %q", tc.args, code, errOut, tc.want)
		}
		if pods, _ := cs.CoreV1().Pods("agents").List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
			t.Errorf("%v: a pod was created", tc.args)
		}
	}
}

func TestRunWithoutACPSaysCPUp(t *testing.T) {
	cs, h := cluster(t), home(t)
	if err := cs.CoreV1().Services("agents").Delete(context.Background(), kubecp.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := clawker(t, cs, h, "run", "-d", "--agent", "dev", "busybox:1", "true")
	if code != cli.ExitUnavailable || !strings.Contains(errOut, "cp up") {
		t.Fatalf("exit %d, %q: want unavailable, pointing at cp up", code, errOut)
	}
}

// A home cp up never ran from has no egress CA: run says so and creates
// nothing (the CP could not intercept for that agent).
func TestRunWithoutTheEgressCASaysCPUp(t *testing.T) {
	cs, h := cluster(t), home(t)
	if err := os.Remove(filepath.Join(h, consts.EgressCAFile)); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := clawker(t, cs, h, "run", "-d", "--agent", "dev", "busybox:1", "true")
	if code != cli.ExitUsage || !strings.Contains(errOut, "cp up makes it") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	if pods, _ := cs.CoreV1().Pods("agents").List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Fatal("a pod was created")
	}
}

func TestRmDeletesThePodAndReportsAMissingOne(t *testing.T) {
	cs, h := cluster(t), home(t)
	if _, _, code := clawker(t, cs, h, "run", "-d", "--agent", "dev", "busybox:1", "sleep", "60"); code != 0 {
		t.Fatal("run failed")
	}
	out, errOut, code := clawker(t, cs, h, "rm", "dev", "ghost")
	if code != cli.ExitNotFound || out != "dev\n" || !strings.Contains(errOut, "no agent ghost") {
		t.Fatalf("rm: exit %d, out %q, err %q", code, out, errOut)
	}
	if _, err := cs.CoreV1().Pods("agents").Get(context.Background(), "clawker.dev", metav1.GetOptions{}); err == nil {
		t.Fatal("pod still there after rm")
	}
}

func TestDockerOnlyCommandsSaySo(t *testing.T) {
	cs, h := cluster(t), home(t)
	for _, args := range [][]string{{"logs", "-n", "5", "dev"}, {"state"}, {"stop", "dev"}} {
		_, errOut, code := clawker(t, cs, h, args...)
		if code != cli.ExitUsage || !strings.Contains(errOut, "not available on the kubernetes runtime") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}

func TestCPUpShipsOnlyTheCPsKeysAndRecordsClawkerd(t *testing.T) {
	// A ready CP pod of the image, as the Deployment would make it.
	ready := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "clawker-cp-1", Namespace: "agents", Labels: map[string]string{kubecp.AppLabel: kubecp.Name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: kubecp.Name, Image: "cp:v1"}}},
		Status:     corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	cs := fake.NewClientset(ready)
	// The Deployment controller's part: the applied template rolled out.
	cs.PrependReactor("*", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if c, ok := a.(k8stesting.CreateAction); ok {
			d := c.GetObject().(*appsv1.Deployment)
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1}
		}
		return false, nil, nil
	})
	h := home(t)
	// A home from before the egress gateway: cp up makes its CA.
	if err := os.Remove(filepath.Join(h, consts.EgressCAFile)); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cli.EnvCPEgressUpstreamDNS, "10.96.7.7:53")
	t.Setenv(cli.EnvCPEgressUpstreamCA, "")
	t.Setenv("CLAWKER_CP_LOG_LEVEL", "")
	out, errOut, code := clawker(t, cs, h, "cp", "up", "--image", "cp:v1", "--clawkerd-image", "clawkerd:v1")
	if code != 0 || !strings.Contains(out, "ready") {
		t.Fatalf("cp up: exit %d, %q %q", code, out, errOut)
	}
	ctx := context.Background()
	keys, err := cs.CoreV1().Secrets("agents").Get(ctx, kubecp.Name+"-keys", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caKey, _ := os.ReadFile(auth.Home{Dir: h}.Path(consts.CAKeyFile))
	for name, b := range keys.Data {
		if bytes.Equal(b, caKey) || name == consts.CAKeyFile || name == consts.SigningKeyFile {
			t.Fatalf("the CP's Secret holds %s: the CA and signing keys stay in the home", name)
		}
	}
	if ca, _ := os.ReadFile(filepath.Join(h, consts.EgressCAFile)); len(ca) == 0 || !bytes.Equal(keys.Data[consts.EgressCAFile], ca) || len(keys.Data[consts.EgressCAKeyFile]) == 0 {
		t.Fatal("the CP's Secret lacks the home's egress CA: its gateway could not intercept")
	}
	dep, err := cs.AppsV1().Deployments("agents").Get(ctx, kubecp.Name, metav1.GetOptions{})
	if err != nil || len(dep.Spec.Template.Spec.Containers[0].Env) != 1 || dep.Spec.Template.Spec.Containers[0].Env[0].Value != "10.96.7.7:53" {
		t.Fatalf("deployment %v: want the egress upstream passed on, as to the Docker CP", err)
	}
	svc, err := cs.CoreV1().Services("agents").Get(ctx, kubecp.Name, metav1.GetOptions{})
	if err != nil || svc.Annotations[kubecp.ClawkerdImageAnnotation] != "clawkerd:v1" {
		t.Fatalf("service %v, %v: want the clawkerd image recorded", svc, err)
	}
	if _, errOut, code := clawker(t, cs, h, "cp", "up"); code != cli.ExitUsage || !strings.Contains(errOut, "--image is required") {
		t.Fatalf("cp up without --image: exit %d, %q", code, errOut)
	}
}

func TestPodStatesInDockersWords(t *testing.T) {
	now := metav1.Now()
	for _, tc := range []struct {
		pod  corev1.Pod
		want string
	}{
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, "created"},
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, "running"},
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, "exited"},
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, "exited"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, "removing"},
	} {
		if got := podState(&tc.pod); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.pod.Status, got, tc.want)
		}
	}
	p := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: consts.PodAgentContainer,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3}}}}}}
	if code, ok := agentExit(p); !ok || code != 3 {
		t.Fatalf("agentExit = %d, %v; want 3", code, ok)
	}
	if _, ok := agentExit(&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}); ok {
		t.Fatal("a running pod reported exited")
	}
}

// attach's answer when the Session ends first: the agent container's exit
// code, by workload ID; a pod that is gone was killed.
func TestExitedByWorkloadID(t *testing.T) {
	exited := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "clawker.done", Namespace: "agents", UID: "6f1c2a4e-0000-4000-8000-000000000001",
			Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent}},
		Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{Name: consts.PodAgentContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 5}}}}},
	}
	live := exited.DeepCopy()
	live.Name, live.UID = "clawker.live", "6f1c2a4e-0000-4000-8000-000000000002"
	live.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: consts.PodAgentContainer,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}
	r := &Runtime{}
	r.once.Do(func() { r.api, r.ns = fake.NewClientset(exited, live), "agents" })
	ctx := context.Background()
	if code, ok := r.Exited(ctx, auth.PodWorkloadID(string(exited.UID))); !ok || code != 5 {
		t.Fatalf("exited pod: %d, %v; want 5", code, ok)
	}
	if _, ok := r.Exited(ctx, auth.PodWorkloadID(string(live.UID))); ok {
		t.Fatal("a running pod reported exited")
	}
	if code, ok := r.Exited(ctx, auth.PodWorkloadID("6f1c2a4e-0000-4000-8000-000000000003")); !ok || code != 137 {
		t.Fatalf("a pod that is gone: %d, %v; want 137", code, ok)
	}
}
