package kubeagent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

func spec(t *testing.T) Spec {
	t.Helper()
	a, err := auth.NewAgentName("alpha")
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.NewProjectSlug("proj")
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Namespace: "agents", Project: p, Agent: a, Image: "busybox:local", ClawkerdImage: "clawkerd:local",
		Cmd: []string{"sleep", "infinity"}, User: "1000", Env: []string{"FOO=bar=baz", "HTTPS_PROXY=http://elsewhere:1"},
		EgressCA: []byte("egress CA PEM"), CPAgentAddr: "10.0.0.1:7444", CPTokenURL: "https://10.0.0.1:7445/oauth2/token", Labels: map[string]string{consts.LabelTest: "t1"}}
}

func TestPodRunsClawkerdFromAnyImage(t *testing.T) {
	pod, err := Pod(spec(t))
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "clawker.proj.alpha" || pod.Labels[consts.LabelPurpose] != consts.PurposeAgent ||
		pod.Labels[consts.LabelAgent] != "alpha" || pod.Labels[consts.LabelProject] != "proj" || pod.Labels[consts.LabelTest] != "t1" {
		t.Fatalf("name/labels: %s %v", pod.Name, pod.Labels)
	}
	ps := pod.Spec
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken || ps.HostNetwork {
		t.Fatal("an agent pod must get no service account token and no host network")
	}
	init := ps.InitContainers[0]
	if init.Image != "clawkerd:local" || !slices.Equal(init.Command, []string{"/clawkerd", "install", consts.ClawkerdDir}) {
		t.Fatalf("init container %+v", init)
	}
	c := ps.Containers[0]
	if c.Name != consts.PodAgentContainer || c.Image != "busybox:local" ||
		!slices.Equal(c.Command, []string{consts.ClawkerdPath, "--"}) || !slices.Equal(c.Args, []string{"sleep", "infinity"}) {
		t.Fatalf("agent container %+v", c)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env[consts.EnvAgent] != "alpha" || env[consts.EnvCPAgentAddr] != "10.0.0.1:7444" || env["FOO"] != "bar=baz" || env[consts.EnvUser] != "1000" {
		t.Fatalf("env %v", env)
	}
	// The gateway is the only way out: its proxy (a user's -e does not
	// replace it), its resolver, and nothing of the cluster's DNS.
	if len(c.Env) != len(env) || env["HTTPS_PROXY"] != "http://10.0.0.1:3128" || env["NODE_EXTRA_CA_CERTS"] != consts.EgressCAPath {
		t.Fatalf("proxy env %v (%d entries for %d names)", env, len(c.Env), len(env))
	}
	if ps.DNSPolicy != corev1.DNSNone || ps.DNSConfig == nil || !slices.Equal(ps.DNSConfig.Nameservers, []string{"10.0.0.1"}) {
		t.Fatalf("DNS %s %+v: want the CP's gateway alone", ps.DNSPolicy, ps.DNSConfig)
	}
	if m := c.VolumeMounts[0]; m.MountPath != consts.ClawkerdDir || !m.ReadOnly {
		t.Fatalf("clawkerd mount %+v: the agent must not be able to replace clawkerd", m)
	}
	if ps.SecurityContext == nil || ps.SecurityContext.SeccompProfile == nil || ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Fatal("an agent pod runs under the runtime's default seccomp profile, as a Docker container does")
	}
	var secretMode int32
	for _, v := range ps.Volumes {
		if v.Secret != nil {
			if v.Secret.SecretName != "clawker.proj.alpha-bootstrap" || v.Secret.Optional != nil && *v.Secret.Optional {
				t.Fatalf("bootstrap volume %+v: must name the pod's Secret and not be optional", v.Secret)
			}
			secretMode = *v.Secret.DefaultMode
		}
	}
	if secretMode != 0o400 {
		t.Fatalf("bootstrap files mode %o, want 0400", secretMode)
	}
}

func TestPodRefusesWhatKubernetesCannotName(t *testing.T) {
	s := spec(t)
	s.Agent, _ = auth.NewAgentName("my_agent")
	if _, err := Pod(s); err == nil || !strings.Contains(err.Error(), `agent name "my_agent" cannot name a pod`) {
		t.Fatalf("underscore: %v", err)
	}
	s = spec(t)
	s.Cmd = nil
	if _, err := Pod(s); err == nil || !strings.Contains(err.Error(), "a command is required") {
		t.Fatalf("no command: %v", err)
	}
	s = spec(t)
	s.Project = auth.ProjectSlug{}
	if pod, err := Pod(s); err != nil || pod.Name != "clawker.alpha" {
		t.Fatalf("global agent: %v", err)
	}
}

// fakeAPI assigns UIDs on create, as the API server does.
func fakeAPI() *fake.Clientset {
	cs := fake.NewClientset()
	n := 0
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		n++
		pod.UID = types.UID("00000000-0000-4000-8000-00000000000" + string(rune('0'+n)))
		return false, nil, nil
	})
	return cs
}

func TestCreateBindsTheSecretToThePodUID(t *testing.T) {
	now := time.Now()
	ca, err := auth.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cs := fakeAPI()
	pod, err := Create(context.Background(), Clients{cs.CoreV1(), cs.NetworkingV1()}, ca, signer, spec(t), now)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := cs.CoreV1().Secrets("agents").Get(context.Background(), "clawker.proj.alpha-bootstrap", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != pod.UID || sec.OwnerReferences[0].Kind != "Pod" {
		t.Fatalf("owner %+v, want the pod %s", sec.OwnerReferences, pod.UID)
	}
	cert, err := auth.ParseCertPEM(sec.Data[consts.BootstrapCert])
	if err != nil {
		t.Fatal(err)
	}
	if uid, err := auth.PodUIDFromCert(cert); err != nil || uid != string(pod.UID) {
		t.Fatalf("cert binds pod %q (%v), want %s", uid, err, pod.UID)
	}
	pol, err := cs.NetworkingV1().NetworkPolicies("agents").Get(context.Background(), PolicyName, metav1.GetOptions{})
	if err != nil || pol.Spec.Egress[0].To[0].IPBlock.CIDR != "10.0.0.1/32" || len(pol.Spec.Egress[0].Ports) != 5 {
		t.Fatalf("isolation policy %+v, %v: want it in place, to the CP only", pol, err)
	}
	if len(sec.Data[consts.BootstrapKey]) == 0 || len(sec.Data[consts.BootstrapCA]) == 0 || len(sec.Data[consts.BootstrapAssert]) == 0 {
		t.Fatal("bootstrap secret lacks a file")
	}
	if string(sec.Data[consts.BootstrapEgressCA]) != "egress CA PEM" {
		t.Fatalf("egress CA %q: want the spec's, for clawkerd to install", sec.Data[consts.BootstrapEgressCA])
	}
}

func TestCreateDeletesThePodWhenTheSecretFails(t *testing.T) {
	now := time.Now()
	ca, _ := auth.NewCA(now)
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cs := fakeAPI()
	cs.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("quota exceeded")
	})
	if _, err := Create(context.Background(), Clients{cs.CoreV1(), cs.NetworkingV1()}, ca, signer, spec(t), now); err == nil || !strings.Contains(err.Error(), "quota exceeded") {
		t.Fatalf("err = %v", err)
	}
	pods, _ := cs.CoreV1().Pods("agents").List(context.Background(), metav1.ListOptions{})
	if len(pods.Items) != 0 {
		t.Fatalf("%d pods left behind", len(pods.Items))
	}
}

func TestIsolationPolicyAdmitsOnlyTheCP(t *testing.T) {
	p := IsolationPolicy("agents", IPPeer(netip.MustParseAddr("10.244.0.1")), 7444, 7445)
	s := p.Spec
	if s.PodSelector.MatchLabels[consts.LabelPurpose] != consts.PurposeAgent || len(s.PolicyTypes) != 2 {
		t.Fatalf("selector/types: %+v", s)
	}
	if len(s.Ingress) != 1 || s.Ingress[0].From[0].IPBlock.CIDR != "10.244.0.1/32" || s.Ingress[0].Ports[0].Port.IntValue() != consts.PortSession {
		t.Fatalf("ingress %+v: only the CP, only the Session port", s.Ingress)
	}
	if len(s.Egress) != 1 || s.Egress[0].To[0].IPBlock.CIDR != "10.244.0.1/32" {
		t.Fatalf("egress %+v: only the CP", s.Egress)
	}
	var ports []string
	for _, p := range s.Egress[0].Ports {
		ports = append(ports, string(*p.Protocol)+"/"+p.Port.String())
	}
	if want := []string{"UDP/53", "TCP/53", "TCP/3128", "TCP/7444", "TCP/7445"}; !slices.Equal(ports, want) {
		t.Fatalf("egress ports %v, want %v: the CP's agent ports and its gateway", ports, want)
	}
}

// A same-named Secret left by a former pod (not yet collected) is
// replaced; one the new pod cannot account for is refused.
func TestCreateReplacesAFormerPodsSecret(t *testing.T) {
	now := time.Now()
	ca, _ := auth.NewCA(now)
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cs := fakeAPI()
	stale := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "clawker.proj.alpha-bootstrap", Namespace: "agents", UID: "old-secret",
		OwnerReferences: []metav1.OwnerReference{{Kind: "Pod", Name: "clawker.proj.alpha", UID: "old-pod"}}},
		Data: map[string][]byte{consts.BootstrapCert: []byte("old")}}
	if _, err := cs.CoreV1().Secrets("agents").Create(context.Background(), stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := Create(context.Background(), Clients{cs.CoreV1(), cs.NetworkingV1()}, ca, signer, spec(t), now)
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := cs.CoreV1().Secrets("agents").Get(context.Background(), "clawker.proj.alpha-bootstrap", metav1.GetOptions{})
	if sec.OwnerReferences[0].UID != pod.UID || string(sec.Data[consts.BootstrapCert]) == "old" {
		t.Fatalf("the new pod would mount the former pod's Secret: %+v", sec.OwnerReferences)
	}

	cs = fakeAPI()
	foreign := stale.DeepCopy()
	foreign.OwnerReferences = nil
	if _, err := cs.CoreV1().Secrets("agents").Create(context.Background(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(context.Background(), Clients{cs.CoreV1(), cs.NetworkingV1()}, ca, signer, spec(t), now); err == nil {
		t.Fatal("replaced a Secret no former pod owned")
	}
}

func TestEnsureIsolationRestoresADriftedPolicy(t *testing.T) {
	cs := fake.NewClientset()
	want := IsolationPolicy("agents", IPPeer(netip.MustParseAddr("10.0.0.1")), 7444, 7445)
	drifted := want.DeepCopy()
	drifted.Spec.Egress = nil
	if _, err := cs.NetworkingV1().NetworkPolicies("agents").Create(context.Background(), drifted, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := EnsureIsolation(context.Background(), cs.NetworkingV1(), want); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.NetworkingV1().NetworkPolicies("agents").Get(context.Background(), PolicyName, metav1.GetOptions{})
	if len(got.Spec.Egress) != 1 {
		t.Fatalf("egress %+v: the drifted policy was not restored", got.Spec.Egress)
	}
}

func TestCreateNeedsTheCPAsAnIP(t *testing.T) {
	s := spec(t)
	s.CPAgentAddr = "clawker-cp.clawker:7444"
	ca, _ := auth.NewCA(time.Now())
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cs := fakeAPI()
	if _, err := Create(context.Background(), Clients{cs.CoreV1(), cs.NetworkingV1()}, ca, signer, s, time.Now()); err == nil || !strings.Contains(err.Error(), "want IP:port") {
		t.Fatalf("err = %v", err)
	}
	if pods, _ := cs.CoreV1().Pods("agents").List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Fatal("a pod was made without its isolation policy")
	}
}

// An in-cluster CP is admitted by its pods' selector, not an address: a
// Service's traffic reaches the policy already sent to a pod.
func TestCreateUsesTheGivenCPPeer(t *testing.T) {
	s := spec(t)
	sel := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cp"}}}
	s.CPPeer = &sel
	ca, _ := auth.NewCA(time.Now())
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cs := fakeAPI()
	if _, err := Create(context.Background(), Clients{cs.CoreV1(), cs.NetworkingV1()}, ca, signer, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	pol, _ := cs.NetworkingV1().NetworkPolicies("agents").Get(context.Background(), PolicyName, metav1.GetOptions{})
	if to := pol.Spec.Egress[0].To[0]; to.PodSelector == nil || to.PodSelector.MatchLabels["app"] != "cp" || to.IPBlock != nil {
		t.Fatalf("egress peer %+v: want the CP's pods", to)
	}
}

// A contained agent leaves the isolation policy's selector and enters the
// quarantine policy's, which admits nothing: policies only add what they
// admit, so staying selected by isolation would keep the CP's way in.
func TestContainedAgentsLeaveIsolationForQuarantine(t *testing.T) {
	iso := IsolationPolicy("agents", IPPeer(netip.MustParseAddr("10.0.0.1")), 7444, 7445)
	q := QuarantinePolicy("agents")
	free := labels.Set{consts.LabelPurpose: consts.PurposeAgent}
	contained := labels.Set{consts.LabelPurpose: consts.PurposeAgent, consts.LabelContained: "network-detach"}
	sel := func(ls metav1.LabelSelector) labels.Selector {
		s, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if !sel(iso.Spec.PodSelector).Matches(free) || sel(iso.Spec.PodSelector).Matches(contained) {
		t.Fatal("isolation must select free agents only")
	}
	if sel(q.Spec.PodSelector).Matches(free) || !sel(q.Spec.PodSelector).Matches(contained) {
		t.Fatal("quarantine must select contained agents only")
	}
	if len(q.Spec.Ingress) != 0 || len(q.Spec.Egress) != 0 || len(q.Spec.PolicyTypes) != 2 {
		t.Fatalf("quarantine %+v must admit nothing either way", q.Spec)
	}
	cs := fake.NewClientset()
	if err := EnsureIsolation(context.Background(), cs.NetworkingV1(), iso); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.NetworkingV1().NetworkPolicies("agents").Get(context.Background(), QuarantineName, metav1.GetOptions{}); err != nil {
		t.Fatalf("EnsureIsolation made no quarantine policy: %v", err)
	}
}
