// Package kubecli is the CLI's kubernetes runtime (the clawker-kube
// binary): agents are pods in one namespace under a CP deployed there, and
// the CLI reaches that CP's admin API through a port-forward.
package kubecli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/klog/v2"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/cli"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubecp"
)

// Runtime is cli.Runtime for a Kubernetes namespace.
type Runtime struct {
	namespace, context, kubeconfig string

	once sync.Once
	cfg  *rest.Config
	api  kubernetes.Interface
	ns   string
	err  error
}

func (r *Runtime) Name() string { return "kubernetes" }

func (r *Runtime) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&r.namespace, "namespace", "n", "", "the agents' and the control plane's namespace (default: the context's, else default)")
	fs.StringVar(&r.context, "context", "", "kubeconfig context (default: the current context)")
	fs.StringVar(&r.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, else ~/.kube/config)")
}

// client loads the kubeconfig once, as kubectl does: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, with --context and --namespace over it.
func (r *Runtime) client() (kubernetes.Interface, string, error) {
	r.once.Do(func() {
		// client-go reports a port-forward's closing streams through
		// klog on stderr; the CLI reports failures itself.
		klog.SetLogger(logr.Discard())
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = r.kubeconfig
		over := &clientcmd.ConfigOverrides{CurrentContext: r.context}
		over.Context.Namespace = r.namespace
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, over)
		cfg, err := cc.ClientConfig()
		if err != nil {
			r.err = cli.UsageError(fmt.Errorf("kubeconfig: %w", err))
			return
		}
		r.ns, _, err = cc.Namespace()
		if err != nil {
			r.err = cli.UsageError(fmt.Errorf("kubeconfig namespace: %w", err))
			return
		}
		cfg.UserAgent = "clawker-kube"
		r.cfg = cfg
		r.api, r.err = kubernetes.NewForConfig(cfg)
	})
	return r.api, r.ns, r.err
}

// apiError is a Kubernetes API failure as the CLI reports it.
func apiError(what string, err error) error {
	return cli.UnavailableError(fmt.Errorf("%s: %w (check --context and that the cluster answers: kubectl get pods)", what, err))
}

// cpPod is the CP's ready pod in ns.
func cpPod(ctx context.Context, api kubernetes.Interface, ns string) (*corev1.Pod, error) {
	pods, err := api.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: kubecp.AppLabel + "=" + kubecp.Name})
	if err != nil {
		return nil, apiError("find the control plane", err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && podReady(p) {
			return p, nil
		}
	}
	return nil, cli.UnavailableError(fmt.Errorf("no ready control plane in namespace %s: start it with clawker --runtime kubernetes -n %s cp up", ns, ns))
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// AdminAddr forwards a loopback port to the CP pod's admin port through
// the API server (websocket, else SPDY, as kubectl port-forward). The
// admin API's own mTLS runs end to end inside the forward.
func (r *Runtime) AdminAddr(ctx context.Context) (string, func(), error) {
	api, ns, err := r.client()
	if err != nil {
		return "", nil, err
	}
	pod, err := cpPod(ctx, api, ns)
	if err != nil {
		return "", nil, err
	}
	url := api.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod.Name).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(r.cfg)
	if err != nil {
		return "", nil, fmt.Errorf("port-forward transport: %w", err)
	}
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	if ws, err := portforward.NewSPDYOverWebsocketDialer(url, r.cfg); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(consts.PortAdmin)},
		stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", nil, fmt.Errorf("port-forward to %s: %w", pod.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	release := sync.OnceFunc(func() { close(stop) })
	select {
	case <-ready:
	case err := <-done:
		return "", nil, apiError("port-forward to the control plane "+pod.Name, err)
	case <-ctx.Done():
		release()
		return "", nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		release()
		return "", nil, fmt.Errorf("port-forward to %s: no local port (%v)", pod.Name, err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))), release, nil
}

// Workloads lists the agent pods of project (any project with anyProject).
func (r *Runtime) Workloads(ctx context.Context, project string, anyProject bool) ([]cli.Workload, error) {
	api, ns, err := r.client()
	if err != nil {
		return nil, err
	}
	pods, err := api.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: consts.LabelPurpose + "=" + consts.PurposeAgent})
	if err != nil {
		return nil, apiError("list agent pods", err)
	}
	var out []cli.Workload
	for i := range pods.Items {
		p := &pods.Items[i]
		if !anyProject && p.Labels[consts.LabelProject] != project {
			continue
		}
		out = append(out, cli.Workload{ID: auth.PodWorkloadID(string(p.UID)), Agent: p.Labels[consts.LabelAgent],
			Project: p.Labels[consts.LabelProject], State: podState(p)})
	}
	return out, nil
}

// Exited finds the agent pod of workload id and reports agentExit.
func (r *Runtime) Exited(ctx context.Context, id string) (int, bool) {
	api, ns, err := r.client()
	if err != nil {
		return 0, false
	}
	pods, err := api.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: consts.LabelPurpose + "=" + consts.PurposeAgent})
	if err != nil {
		return 0, false
	}
	for i := range pods.Items {
		if auth.PodWorkloadID(string(pods.Items[i].UID)) == id {
			return agentExit(&pods.Items[i])
		}
	}
	return agentExit(nil)
}

// podState is a pod's phase in docker's words.
func podState(p *corev1.Pod) string {
	switch {
	case p.DeletionTimestamp != nil:
		return "removing"
	case p.Status.Phase == corev1.PodRunning:
		return "running"
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		return "exited"
	}
	return "created"
}

// agentExit is the agent container's exit code once it has terminated;
// a pod that is gone (nil: kill or rm deleted it) counts as killed, 137 as
// docker reports SIGKILL.
func agentExit(p *corev1.Pod) (int, bool) {
	if p == nil {
		return 137, true
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == consts.PodAgentContainer && s.State.Terminated != nil {
			return int(s.State.Terminated.ExitCode), true
		}
	}
	if p.Status.Phase == corev1.PodFailed { // e.g. its init container failed
		return 1, true
	}
	return 0, false
}

// Commands are the runtime's run, rm and cp.
func (r *Runtime) Commands(h cli.Host) []*cobra.Command {
	return []*cobra.Command{r.runCmd(h), r.rmCmd(h), r.cpCmd(h)}
}
