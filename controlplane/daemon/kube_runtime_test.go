package daemon

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubeagent"
)

// On the kubernetes runtime the CP serves the agent surface and runs the
// dialer over the pod view, never asks Docker, and is ready once the
// pod informer has listed.
func TestRunOnKubernetesRuntime(t *testing.T) {
	cfg := testConfig(t)
	cfg.Runtime, cfg.Namespace = RuntimeKubernetes, "agents"
	// A running agent pod (at an address nothing answers on), listed late:
	// the boot pass must still dial it.
	cs := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "alpha", Namespace: "agents", UID: "u1",
		Labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: "alpha"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "192.0.2.10", ContainerStatuses: []corev1.ContainerStatus{{
			Name: consts.PodAgentContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}})
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		time.Sleep(300 * time.Millisecond)
		return false, nil, nil
	})
	var log syncBuf
	var dockerAsked atomic.Bool
	d, _, _ := start(t, cfg, &log,
		WithDocker(func() (mobyclient.APIClient, error) { dockerAsked.Store(true); return nil, errNoDocker }),
		WithKube(func() (kubeagent.Clients, error) {
			return kubeagent.Clients{Core: cs.CoreV1(), Networking: cs.NetworkingV1()}, nil
		}))
	waitFor(t, "ready", func() bool { code, _ := getHealth(t, d.Addr("health")); return code == http.StatusOK })
	_, hb := getHealth(t, d.Addr("health"))
	for sub, want := range map[string]string{subKube: statusOK, subDocker: statusDisabled, subToken: statusOK,
		subAgentAPI: statusOK, subDialer: statusOK, subAdmin: statusOK, subEgress: statusOK} {
		if hb.Subsystems[sub] != want {
			t.Errorf("%s = %q, want %q (all: %v)", sub, hb.Subsystems[sub], want, hb.Subsystems)
		}
	}
	if !strings.Contains(log.String(), `"event":"agent_start_done","dialed":1`) {
		t.Errorf("the boot pass did not dial the running agent pod:\n%s", log.String())
	}
	if dockerAsked.Load() {
		t.Error("the kubernetes runtime built a Docker client")
	}
	var listed bool
	for _, a := range cs.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok && a.GetNamespace() == "agents" &&
			l.GetListRestrictions().Labels.String() == consts.LabelPurpose+"="+consts.PurposeAgent {
			listed = true
		}
	}
	if !listed {
		t.Fatalf("no list of the namespace's agent pods: %v", cs.Actions())
	}
}

// No Kubernetes API: the CP still serves health and admin, and says why
// the agent surface is down.
func TestRunOnKubernetesWithoutAPIDegrades(t *testing.T) {
	cfg := testConfig(t)
	cfg.Runtime = RuntimeKubernetes
	var log syncBuf
	d, _, _ := start(t, cfg, &log, WithKube(func() (kubeagent.Clients, error) {
		return kubeagent.Clients{}, errors.New("no cluster in unit tests")
	}))
	waitFor(t, "startup finished", func() bool { return strings.Contains(log.String(), "cp_degraded") })
	_, hb := getHealth(t, d.Addr("health"))
	// No pod lookup, no attribution: the gateway stays off (agents have
	// no egress) rather than serve unattributed requests.
	if !strings.HasPrefix(hb.Subsystems[subKube], "failed") || !strings.HasPrefix(hb.Subsystems[subAgentAPI], "disabled") ||
		hb.Subsystems[subAdmin] != statusOK || hb.Subsystems[subEgress] != statusDisabled {
		t.Fatalf("subsystems: %v", hb.Subsystems)
	}
	if !strings.Contains(log.String(), `"event":"cp_kube_unavailable"`) {
		t.Fatal("log lacks cp_kube_unavailable")
	}
}

func TestLoadConfigRuntime(t *testing.T) {
	env := map[string]string{"CLAWKER_CP_RUNTIME": "kubernetes", "CLAWKER_CP_KUBECONFIG": "/kc"}
	cfg, err := LoadConfig([]string{"--namespace=team-a"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runtime != RuntimeKubernetes || cfg.Namespace != "team-a" || cfg.Kubeconfig != "/kc" {
		t.Fatalf("runtime config: %+v", cfg)
	}
	if def, err := LoadConfig(nil, func(string) string { return "" }, io.Discard); err != nil || def.Runtime != RuntimeDocker {
		t.Fatalf("default runtime %q, %v", def.Runtime, err)
	}
	for name, args := range map[string][]string{
		"unknown runtime":       {"--runtime=podman"},
		"pods cannot be paused": {"--runtime=kubernetes", "--untrusted-policy=pause"},
	} {
		if _, err := LoadConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
