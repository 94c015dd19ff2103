package kube

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubeagent"
	"github.com/clawker/clawker/internal/testenv"
)

// TestAgentsAsPods runs two agents as pods under a clawker-cp host
// process on the kubernetes runtime (see agentScenario).
func TestAgentsAsPods(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	agentScenario(t, c, ns, startCP(t, c, ns))
}

// agentScenario runs two agents under p, then checks the gate, isolation
// and a CP restart against them, in that order.
func agentScenario(t *testing.T, c *cluster, ns string, p controlPlane) {
	ctx := context.Background()
	ca, signer := loadSigners(t, p.keys())
	spec := func(name string) kubeagent.Spec { return agentSpec(t, ns, p, name) }
	ids := map[string]string{}
	for _, name := range []string{"alpha", "beta"} {
		pod, err := kubeagent.Create(ctx, kubeagent.Clients{Core: c.kube.CoreV1(), Networking: c.kube.NetworkingV1()}, ca, signer, spec(name), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = auth.PodWorkloadID(string(pod.UID))
	}
	ready := func(a *adminv1.Agent) error {
		if a == nil || !a.GetRegistered() || a.GetSessionState() != "connected" || a.GetInitState() != "completed" || !a.GetTrusted() {
			return fmt.Errorf("not ready: %v", a)
		}
		return nil
	}
	testenv.Eventually(t, 3*time.Minute, "both agent pods registered and initialised", func() error {
		agents, err := p.api().agents(ctx)
		if err != nil {
			return err
		}
		for name, id := range ids {
			if err := ready(agents[id]); err != nil {
				return fmt.Errorf("%s: %w; pod: %s", name, err, c.podStatus(ctx, ns, "clawker."+name))
			}
		}
		return nil
	})
	// What the two Registers cost the API server: every pod GET and LIST
	// but the informer's first list.
	const reqs = "clawker_cp_kube_api_requests_total"
	calls := p.api().metric(t, reqs, `{resource="pods",verb="get"}`) + p.api().metric(t, reqs, `{resource="pods",verb="list"}`) - 1
	registers := p.api().metric(t, "clawker_cp_registrations_total", `{outcome="ok",reason=""}`)
	t.Logf("Kubernetes API calls for %v Registers: %v (%.1f per Register)", registers, calls, calls/registers)
	if registers != 2 || calls > 2*registers {
		t.Fatalf("%v API calls for %v Registers: want one lookup (one call) each at the token endpoint and at Register", calls, registers)
	}
	out, code, err := p.api().exec(ctx, ids["alpha"], "sh", "-c", "echo hello from $CLAWKER_AGENT; cat /proc/1/cmdline | tr '\\0' ' '")
	if err != nil || code != 0 || !strings.Contains(out, "hello from alpha") || !strings.Contains(out, consts.ClawkerdPath) {
		t.Fatalf("exec in alpha: %q exit %d, %v; want the agent's env and clawkerd as PID 1", out, code, err)
	}

	t.Run("gate refuses a pod holding another pod's cert", func(t *testing.T) {
		// mallory has agent labels, and a cert and fresh assertion minted
		// for alpha's pod: everything but the pod the peer IP belongs to.
		pod, err := kubeagent.Pod(spec("mallory"))
		if err != nil {
			t.Fatal(err)
		}
		mallory := impostor(t, c, ns, pod, ca, signer, "alpha", c.podUID(t, ns, "clawker.alpha"))
		malloryID := auth.PodWorkloadID(string(mallory.UID))
		// The CP dials every agent pod; mallory's cert binds alpha's pod,
		// not the pod at the address it dialed, so the Session stays
		// observation-only: no Register is asked for, nothing is run.
		c.awaitMismatch(t, p, ns, mallory)
		agents, err := p.api().agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a := agents[malloryID]; a.GetRegistered() {
			t.Fatalf("mallory has a registry row: %v", a)
		}
		if out, _, err := p.api().exec(ctx, malloryID, "echo", "pwned"); err == nil || strings.Contains(out, "pwned") {
			t.Fatalf("exec in mallory ran: %q %v", out, err)
		}
		if err := ready(agents[ids["alpha"]]); err != nil {
			t.Fatalf("alpha after mallory: %v", err)
		}
		zero := int64(0)
		_ = c.kube.CoreV1().Pods(ns).Delete(ctx, mallory.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})

	t.Run("agents reach only the CP", func(t *testing.T) {
		betaIP := c.podIP(t, ns, "clawker.beta")
		knock := func(addr string) string { return "nc -w 3 " + addr + " </dev/null; echo rc=$?" }
		reaches := func(from, addr string) (bool, error) {
			out, _, err := p.api().exec(ctx, ids[from], "sh", "-c", knock(addr))
			return strings.Contains(out, "rc=0"), err
		}
		// kubeagent.Create put the policy in place before the pods.
		if ok, err := reaches("alpha", betaIP+" 7700"); err != nil || ok {
			t.Fatalf("alpha reaches beta's Session port under the policy (%v)", err)
		}
		// nc works in the agent, and the policy lets it out to the CP.
		if ok, err := reaches("alpha", strings.Replace(p.agentAddr(), ":", " ", 1)); err != nil || !ok {
			t.Fatalf("alpha cannot reach the CP's agent port (%v)", err)
		}
		// The policy is what blocks: without it alpha reaches beta, and
		// EnsureIsolation puts it back.
		pols := c.kube.NetworkingV1().NetworkPolicies(ns)
		want, err := pols.Get(ctx, kubeagent.PolicyName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := pols.Delete(ctx, kubeagent.PolicyName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, time.Minute, "alpha reaches beta without the policy", func() error {
			if ok, err := reaches("alpha", betaIP+" 7700"); err != nil || !ok {
				return fmt.Errorf("not yet (%v)", err)
			}
			return nil
		})
		want.ObjectMeta = metav1.ObjectMeta{Name: want.Name, Namespace: ns, Labels: want.Labels}
		if err := kubeagent.EnsureIsolation(ctx, c.kube.NetworkingV1(), want); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, time.Minute, "alpha cut off from beta again", func() error {
			if ok, err := reaches("alpha", betaIP+" 7700"); err != nil || ok {
				return fmt.Errorf("still reaches beta (%v)", err)
			}
			return nil
		})
		// The CP still reaches both, over the one port the policy admits.
		for name, id := range ids {
			if out, code, err := p.api().exec(ctx, id, "echo", "still-"+name); err != nil || code != 0 || !strings.Contains(out, "still-"+name) {
				t.Fatalf("exec in %s under the policy: %q %d %v", name, out, code, err)
			}
		}
	})

	t.Run("CP restart reconnects every agent without a second Register", func(t *testing.T) {
		p.restart(t)
		testenv.Eventually(t, 2*time.Minute, "both agents reconnected", func() error {
			agents, err := p.api().agents(ctx)
			if err != nil {
				return err
			}
			for name, id := range ids {
				if err := ready(agents[id]); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			return nil
		})
		log := p.log(t)
		for _, ev := range []string{`"event":"agent_registered"`, `"event":"token_issued"`} {
			if strings.Contains(log, ev) {
				t.Fatalf("restarted CP logged %s: an agent registered again", ev)
			}
		}
		if out, code, err := p.api().exec(ctx, ids["beta"], "echo", "after-restart"); err != nil || code != 0 || !strings.Contains(out, "after-restart") {
			t.Fatalf("exec after restart: %q %d %v", out, code, err)
		}
	})

	t.Run("contain kills, and detaches from an in-cluster CP", func(t *testing.T) {
		contain := func(id string, action adminv1.ContainAction) {
			t.Helper()
			if _, err := p.api().admin.Contain(ctx, &adminv1.ContainRequest{Agent: &adminv1.AgentRef{ContainerId: id},
				Action: action, Reason: "e2e"}); err != nil {
				t.Fatalf("contain %v: %v", action, err)
			}
		}
		if _, err := p.api().admin.Contain(ctx, &adminv1.ContainRequest{Agent: &adminv1.AgentRef{ContainerId: ids["beta"]},
			Action: adminv1.ContainAction_CONTAIN_ACTION_PAUSE}); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("pause of a pod: %v, want FailedPrecondition", err)
		}
		// Policy controllers admit the node's own traffic, so a detach only
		// cuts a CP that runs as a pod.
		if p.peer() != nil {
			contain(ids["beta"], adminv1.ContainAction_CONTAIN_ACTION_NETWORK_DETACH)
			// The policy spares established flows: the CP ends its Session.
			testenv.Eventually(t, time.Minute, "the CP's Session to beta ended", func() error {
				agents, err := p.api().agents(ctx)
				if err != nil {
					return err
				}
				if b := agents[ids["beta"]]; b == nil || b.GetSessionState() == "connected" {
					return fmt.Errorf("beta: %v", b)
				}
				return nil
			})
			// A fresh CP dials every running agent: alpha answers, the
			// quarantined beta never does.
			p.restart(t)
			testenv.Eventually(t, time.Minute, "alpha reconnected", func() error {
				agents, err := p.api().agents(ctx)
				if err != nil {
					return err
				}
				return ready(agents[ids["alpha"]])
			})
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				agents, err := p.api().agents(ctx)
				if err != nil {
					t.Fatal(err)
				}
				b := agents[ids["beta"]]
				if b == nil {
					t.Fatal("beta missing from the agents list")
				}
				if st := b.GetSessionState(); st == "connected" {
					t.Fatalf("the CP reached the quarantined beta (session %s)", st)
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
		contain(ids["alpha"], adminv1.ContainAction_CONTAIN_ACTION_KILL)
		testenv.Eventually(t, time.Minute, "alpha's pod and registry row gone", func() error {
			if _, err := c.kube.CoreV1().Pods(ns).Get(ctx, "clawker.alpha", metav1.GetOptions{}); err == nil {
				return fmt.Errorf("pod still there")
			}
			agents, err := p.api().agents(ctx)
			if err != nil {
				return err
			}
			if a := agents[ids["alpha"]]; a != nil && a.GetRegistered() {
				return fmt.Errorf("alpha still registered: %v", a)
			}
			return nil
		})
	})
}

// awaitMismatch waits until p judges pod untrusted for container_mismatch:
// its Session is up but its cert names another pod.
func (c *cluster) awaitMismatch(t *testing.T, p controlPlane, ns string, pod *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	id := auth.PodWorkloadID(string(pod.UID))
	testenv.Eventually(t, 2*time.Minute, pod.Name+" judged untrusted", func() error {
		agents, err := p.api().agents(ctx)
		if err != nil {
			return err
		}
		a := agents[id]
		if a == nil || a.GetTrusted() || !slices.Contains(a.GetUntrustedReasons(), "container_mismatch") {
			return fmt.Errorf("%s: %v; pod: %s", pod.Name, a, c.podStatus(ctx, ns, pod.Name))
		}
		return nil
	})
}

// loadSigners is the home's CA and assertion signer.
func loadSigners(t *testing.T, home auth.Home) (*auth.CA, *ecdsa.PrivateKey) {
	t.Helper()
	ca, err := home.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := home.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return ca, signer
}

// agentSpec is a test agent pod running sleep under p.
func agentSpec(t *testing.T, ns string, p controlPlane, name string) kubeagent.Spec {
	return kubeagent.Spec{Namespace: ns, Agent: mustName(t, name), Image: agentImage, ClawkerdImage: clawkerdImage,
		Cmd: []string{"sleep", "3600"}, CPAgentAddr: p.agentAddr(), CPTokenURL: p.tokenURL(), CPPeer: p.peer(),
		Labels: map[string]string{consts.LabelTest: testLabel}}
}

// impostor creates pod with a bootstrap Secret (a cert and a fresh
// assertion) minted for agent victim's pod victimUID: everything but the
// pod its address belongs to.
func impostor(t *testing.T, c *cluster, ns string, pod *corev1.Pod, ca *auth.CA, signer *ecdsa.PrivateKey, victim, victimUID string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	created, err := c.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.MintAgentPod(auth.ProjectSlug{}, mustName(t, victim), victimUID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.MintBootstrap(signer, leaf, auth.PodWorkloadID(victimUID), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.kube.CoreV1().Secrets(ns).Create(ctx, kubeagent.Secret(created, b, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return created
}

func mustName(t *testing.T, s string) auth.AgentName {
	t.Helper()
	a, err := auth.NewAgentName(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (c *cluster) pod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	pod, err := c.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func (c *cluster) podUID(t *testing.T, ns, name string) string { return string(c.pod(t, ns, name).UID) }
func (c *cluster) podIP(t *testing.T, ns, name string) string  { return c.pod(t, ns, name).Status.PodIP }

// podStatus summarises a pod for a failure message.
func (c *cluster) podStatus(ctx context.Context, ns, name string) string {
	pod, err := c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	s := fmt.Sprintf("phase %s ip %s", pod.Status.Phase, pod.Status.PodIP)
	for _, cs := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		s += fmt.Sprintf("; %s: %+v", cs.Name, cs.State)
	}
	return s
}
