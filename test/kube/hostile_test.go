package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubeagent"
	"github.com/clawker/clawker/internal/testenv"
	"github.com/clawker/clawker/internal/testenv/hostile"
)

// podAttack is one row of the hostile-peer subset run from pods.
type podAttack struct {
	name string
	// agent: the attacking pod wears the agent labels (it looks like an
	// agent to the CP's pod view); else it is a stranger pod.
	agent bool
	// material is the attacker's -dir (cert.pem, key.pem, assertion,
	// token), minted once the pod's UID is known; nil: none.
	material func(t *testing.T, uid string) map[string]string
	args     []string // mode and target
	event    string   // the CP log event that classifies the refusal
	want     func(hostile.Outcome) error
}

// TestHostilePodsAreRefused runs a subset of the hostile-peer matrix
// (test/e2e) from pods on the cluster: the TLS layer of both listeners,
// the token endpoint's checks that involve the pod view (a stranger pod,
// a cert or assertion of another pod), and Register without a token.
// Each attack is the attacker binary as a pod's command; every one must be
// refused with the gate's one generic answer, the CP must log why, and no
// registry row may appear.
func TestHostilePodsAreRefused(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	p := startCP(t, c, ns)
	ctx := context.Background()
	ca, signer := loadSigners(t, p.keys())
	alpha, err := kubeagent.Create(ctx, kubeagent.Clients{Core: c.kube.CoreV1(), Networking: c.kube.NetworkingV1()}, ca, signer, agentSpec(t, ns, p, "alpha"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	alphaUID, alphaID := string(alpha.UID), auth.PodWorkloadID(string(alpha.UID))
	testenv.Eventually(t, 3*time.Minute, "alpha registered", func() error {
		agents, err := p.api().agents(ctx)
		if err != nil {
			return err
		}
		if a := agents[alphaID]; a == nil || !a.GetRegistered() {
			return fmt.Errorf("alpha: %v; pod: %s", a, c.podStatus(ctx, ns, alpha.Name))
		}
		return nil
	})

	foreignHome := auth.Home{Dir: t.TempDir()}
	if _, err := foreignHome.Init(time.Now()); err != nil {
		t.Fatal(err)
	}
	foreignCA, _ := loadSigners(t, foreignHome)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// bootstrap is material from issuer for the pod uid, with an
	// assertion signed by key for the workload of assertFor.
	bootstrap := func(issuer *auth.CA, key *ecdsa.PrivateKey, certFor, assertFor string) func(*testing.T, string) map[string]string {
		return func(t *testing.T, uid string) map[string]string {
			if certFor == "" {
				certFor = uid
			}
			if assertFor == "" {
				assertFor = uid
			}
			leaf, err := issuer.MintAgentPod(auth.ProjectSlug{}, mustName(t, "attacker"), certFor, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			b, err := issuer.MintBootstrap(key, leaf, auth.PodWorkloadID(assertFor), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return map[string]string{"cert.pem": string(b.Cert), "key.pem": string(b.Key), "assertion": b.Assertion}
		}
	}
	token := []string{"-mode", "token", "-target", p.tokenURL()}
	register := []string{"-mode", "register", "-target", p.agentAddr(), "-agent", "attacker"}
	tlsRefusal, oauth := hostile.RefusedAtTLS, hostile.RefusedOAuth(401, hostile.GenericOAuth)
	attacks := []podAttack{
		{"token-no-cert", false, nil, token, "token_http_error", tlsRefusal},
		{"token-foreign-ca", true, bootstrap(foreignCA, signer, "", ""), token, "token_http_error", tlsRefusal},
		{"cp-no-cert", false, nil, register, "", tlsRefusal},
		{"cp-foreign-ca", true, bootstrap(foreignCA, signer, "", ""), register, "", tlsRefusal},
		// A valid cert and assertion for its own UID, from a pod that is
		// not an agent: its IP resolves to no agent pod.
		{"stranger-own-valid-cert", false, bootstrap(ca, signer, "", ""), token, "token_peer_unresolved", oauth},
		{"assertion-for-another-pod", true, bootstrap(ca, signer, "", alphaUID), token, "token_assertion_cert_mismatch", oauth},
		{"stolen-cert-and-assertion-from-another-pod", true, bootstrap(ca, signer, alphaUID, alphaUID), token, "token_assertion_wrong_container", oauth},
		{"assertion-forged-wrong-key", true, bootstrap(ca, otherKey, "", ""), token, "token_assertion_bad_signature", oauth},
		{"register-without-token", true, bootstrap(ca, signer, "", ""), register, "auth_token_missing", hostile.RefusedRPC("Unauthenticated", hostile.GenericUnauth)},
	}
	var rows []string
	for _, a := range attacks {
		logged := len(p.log(t))
		o := c.attack(t, ns, a)
		if o.OK {
			t.Errorf("%s LEAKED: %+v", a.name, o)
		} else if err := a.want(o); err != nil {
			t.Errorf("%s: refused, but not as expected: %v", a.name, err)
		}
		// This attack's own classification, in what the CP logged since
		// it began (the agent API's TLS refusals log none, as on Docker).
		if a.event != "" {
			testenv.Eventually(t, 10*time.Second, a.name+" logged as "+a.event, func() error {
				if !strings.Contains(p.log(t)[logged:], `"event":"`+a.event+`"`) {
					return fmt.Errorf("no %s event since the attack began", a.event)
				}
				return nil
			})
		}
		rows = append(rows, fmt.Sprintf("%-44s %-8v %-32s %s", a.name, a.agent, a.event, o))
	}
	t.Logf("hostile-peer subset on pods:\n%-44s %-8s %-32s %s\n%s", "attack", "labels", "CP log event", "answer", strings.Join(rows, "\n"))
	agents, err := p.api().agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id, a := range agents {
		if a.GetRegistered() && id != alphaID {
			t.Errorf("a registry row appeared for %s: %v", id, a)
		}
	}
	if n := p.api().metric(t, "clawker_cp_registrations_total", `{outcome="ok",reason=""}`); n != 1 {
		t.Errorf("%v Registers ok; want only alpha's", n)
	}
}

// triggerPort is where an attacker pod waits for the test's knock.
const triggerPort = 9000

// attack runs a as a one-shot pod and returns the attacker's outcome.
func (c *cluster) attack(t *testing.T, ns string, a podAttack) hostile.Outcome {
	t.Helper()
	ctx := context.Background()
	name := "atk-" + a.name
	labels := map[string]string{consts.LabelTest: testLabel}
	if a.agent {
		labels[consts.LabelManaged], labels[consts.LabelPurpose], labels[consts.LabelAgent] = "true", consts.PurposeAgent, "attacker"
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: &no, EnableServiceLinks: &no,
			Containers: []corev1.Container{{Name: "attacker", Image: attackerImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command:      append([]string{"/attacker", "-name", a.name, "-dir", "/attack", "-trigger", ":" + itoa(triggerPort)}, a.args...),
				VolumeMounts: []corev1.VolumeMount{{Name: "material", MountPath: "/attack", ReadOnly: true}}}},
			Volumes: []corev1.Volume{{Name: "material", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}}}},
		},
	}
	created, err := c.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]string{}
	if a.material != nil {
		data = a.material(t, string(created.UID))
	}
	if _, err := c.kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		StringData: data}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The attacker waits for a knock, sent once the API shows the pod's
	// IP: the CP's lookup of a pod whose IP is not known yet would refuse
	// for that reason, not for the one under test.
	testenv.Eventually(t, 2*time.Minute, name+" knocked", func() error {
		p, err := c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.PodIP == "" {
			return fmt.Errorf("no IP yet: %s", c.podStatus(ctx, ns, name))
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(p.Status.PodIP, itoa(triggerPort)), time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	testenv.Eventually(t, 2*time.Minute, name+" finished", func() error {
		p, err := c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("%s: %s", p.Status.Phase, c.podStatus(ctx, ns, name))
		}
		return nil
	})
	rc, err := c.kube.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out, _ := io.ReadAll(rc)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var o hostile.Outcome
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &o); err != nil {
		t.Fatalf("%s: unparsable outcome: %v\n%s", name, err, out)
	}
	return o
}
