package daemon

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	networkingv1client "k8s.io/client-go/kubernetes/typed/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/kubepods"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/kubeagent"
)

// subKube is the Kubernetes runtime's /healthz subsystem: the pod
// informer's list and watch.
const subKube = "kubernetes"

// kubeSyncWait bounds the wait for the first pod list at startup.
const kubeSyncWait = 20 * time.Second

// WithKube replaces the Kubernetes client constructor (tests: a fake
// clientset).
func WithKube(fn func() (kubeagent.Clients, error)) Option {
	return func(d *Daemon) { d.newKube = fn }
}

// kubeClient builds the client from Config.Kubeconfig, or from the pod's
// service account when it is empty.
func (d *Daemon) kubeClient(requests *prometheus.CounterVec) (kubeagent.Clients, error) {
	var (
		cfg *rest.Config
		err error
	)
	if d.cfg.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", d.cfg.Kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return kubeagent.Clients{}, fmt.Errorf("kubernetes config: %w", err)
	}
	cfg.UserAgent = "clawker-cp/" + d.version
	// Every Register is one API call: client-go's default 5 QPS would queue
	// an agent storm behind itself, and no call may hang a Register.
	cfg.QPS, cfg.Burst, cfg.Timeout = 100, 200, 15*time.Second
	if requests != nil {
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return kubeRequests{next: rt, c: requests} })
	}
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return kubeagent.Clients{}, err
	}
	nets, err := networkingv1client.NewForConfig(cfg)
	if err != nil {
		return kubeagent.Clients{}, err
	}
	return kubeagent.Clients{Core: core, Networking: nets}, nil
}

// startKube runs the Kubernetes runtime: the pod view (peer lookup, pod
// transitions on the bus, dial targets), the agent surface and the
// dialer, and the pod lookup the egress gateway attributes by. The
// Docker-only subsystems (agent networks and volumes) stay off and say so
// on /healthz.
func (d *Daemon) startKube(runCtx context.Context, k *keys, bus *overseer.Overseer, registry agent.Registry,
	m *metrics, closers *[]func()) runtimeOut {
	log := d.log
	var out runtimeOut
	d.health.set(subDocker, statusDisabled)
	disable := func(reason string) {
		for _, s := range []string{subToken, subAgentAPI, subDialer} {
			d.health.set(s, "disabled: "+reason)
		}
	}
	newKube := d.newKube
	if newKube == nil {
		requests, err := newKubeRequests(m.reg)
		if err != nil {
			log.Warn().Str("event", "cp_kube_metrics_unavailable").Err(err).Msg("Kubernetes API request counter not registered")
		}
		newKube = func() (kubeagent.Clients, error) { return d.kubeClient(requests) }
	}
	clients, err := newKube()
	if err != nil {
		log.Error().Str("event", "cp_kube_unavailable").Err(err).Msg("no Kubernetes client: agent pods cannot be watched, dialed or verified")
		d.health.set(subKube, "failed: "+err.Error())
		disable("needs the Kubernetes API")
		return out
	}
	pods, err := kubepods.New(clients.Core, d.cfg.Namespace, bus, log.With("subsystem", "kubepods"))
	if err != nil {
		log.Error().Str("event", "cp_kube_unavailable").Err(err).Msg("agent pod view not built")
		d.health.set(subKube, "failed: "+err.Error())
		disable("needs the Kubernetes API")
		return out
	}
	d.health.probe(subKube, pods.Health)
	go d.guard("kubepods", func() {
		if err := pods.Run(runCtx); err != nil && runCtx.Err() == nil {
			log.Error().Str("event", "cp_kube_pods_stopped").Err(err).Msg("agent pod informer stopped")
		}
	})
	// The boot reconcile dials the running agents from the informer's
	// cache, and the first list publishes no starts: wait for it (bounded,
	// so an unreachable API does not hold up the admin listener).
	syncCtx, cancel := context.WithTimeout(runCtx, kubeSyncWait)
	if !pods.WaitSynced(syncCtx) {
		log.Warn().Str("event", "cp_kube_sync_slow").Dur("waited", kubeSyncWait).
			Msg("agent pods not listed yet: running agents are dialed by the next reconcile pass")
	}
	cancel()
	if k == nil {
		disable("needs keys")
		return out
	}
	if srv, gs := d.serveAgentSurface(k, pods, registry, closers); srv != nil {
		out.http = append(out.http, srv)
		out.grpc = append(out.grpc, gs)
	}
	out.peers = pods
	out.contain = detachEndsSession{Containment: pods.Containment(clients.Networking), d: d}
	pol := d.startPolicy(runCtx, out.contain, bus, closers)
	d.startAgents(runCtx, k, agentRuntime{resolve: pods.DialTarget, peers: pods, labels: pods}, bus, registry, pol, closers)
	return out
}

// detachEndsSession ends the CP's own Session after a pod's detach: the
// quarantine policy admits no new flow, but iptables-based controllers
// (kube-router among them) let established flows run on. Redials then
// meet the policy.
type detachEndsSession struct {
	admin.Containment
	d *Daemon
}

func (c detachEndsSession) Detach(ctx context.Context, t admin.Target) error {
	if err := c.Containment.Detach(ctx, t); err != nil {
		return err
	}
	c.d.mu.Lock()
	dialer := c.d.dialer
	c.d.mu.Unlock()
	if dialer != nil {
		dialer.CancelDial(t.ContainerID)
	}
	return nil
}
