package kubecli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/cli"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubeagent"
	"github.com/clawker/clawker/internal/kubecp"
)

// startWait bounds how long an attached run waits for the agent's
// container to start (the image pull, the init container, the Secret).
const startWait = 3 * time.Minute

type runOptions struct {
	project, agent, name, user, clawkerdImage, detachKeys string
	env                                                   []string
	detach, interactive, tty, rm, debug                   bool
}

func (r *Runtime) runCmd(h cli.Host) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE CMD...",
		Short: "Create an agent pod from any image",
		Long: `run creates an agent pod from IMAGE in the namespace, under the control plane
deployed there (clawker cp up). An init container copies clawkerd into the
pod and clawkerd becomes its command; CMD is the user command it starts
once the control plane has registered and initialised the agent. Unlike
on Docker, CMD is required: a pod cannot inherit its image's CMD once its
command is replaced.

run mints the pod's certificate, bound to the pod's UID, after the pod is
created and before it can start: the bootstrap Secret the pod mounts does
not exist until then.

Attached by default: the pod's output is followed and run exits with the
command's exit code (Ctrl-C detaches). With -d it prints the agent ID.`,
		Example: `  clawker --runtime kubernetes run -d --agent dev busybox:1.36 sleep 3600
  clawker --runtime kubernetes -n agents run -it --agent shell busybox:1.36 sh`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return r.run(cmd.Context(), h, o, args[0], args[1:])
		},
	}
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringVarP(&o.project, "project", "p", "", "project the agent belongs to (empty: a global agent)")
	f.StringVarP(&o.agent, "agent", "a", "", "agent name, unique within the project (required)")
	f.StringVar(&o.name, "name", "", "same as --agent (docker's spelling)")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (KEY=VALUE, or KEY to pass yours)")
	f.StringVarP(&o.user, "user", "u", "", "user the command runs as (name or uid[:gid])")
	f.StringVar(&o.clawkerdImage, "clawkerd-image", "", "image holding /clawkerd (default: the one clawker cp up recorded)")
	f.BoolVarP(&o.detach, "detach", "d", false, "create the agent and print its ID")
	f.BoolVarP(&o.interactive, "interactive", "i", false, "with -t: forward your keys to the agent's command")
	f.BoolVarP(&o.tty, "tty", "t", false, "run the command on a pseudo-terminal and attach to it")
	f.StringVar(&o.detachKeys, "detach-keys", cli.DefaultDetachKeys, "with -it: key sequence that detaches (docker syntax; empty: none)")
	f.BoolVar(&o.rm, "rm", false, "delete the agent pod when its command exits (attached runs only)")
	f.BoolVar(&o.debug, "debug", false, "attached: also show clawkerd's own log lines")
	return cmd
}

// check validates the flags before anything touches the cluster.
func (o *runOptions) check(cmdArgs []string) ([]string, []byte, error) {
	if o.name != "" {
		if o.agent != "" && o.agent != o.name {
			return nil, nil, cli.UsageError(fmt.Errorf("--name %q and --agent %q disagree: give one", o.name, o.agent))
		}
		o.agent = o.name
	}
	if o.agent == "" {
		return nil, nil, cli.UsageError(errors.New("--agent (or --name) is required: name the agent (e.g. --agent dev)"))
	}
	if len(cmdArgs) == 0 {
		return nil, nil, cli.UsageError(errors.New("give the command after the image: an agent pod's command is clawkerd, so the image's own CMD does not apply"))
	}
	if o.interactive && !o.tty {
		return nil, nil, cli.UsageError(errors.New("run -i needs -t (use -it): clawker relays an agent's stdin only through its terminal"))
	}
	if o.rm && o.detach {
		return nil, nil, cli.UsageError(errors.New("--rm needs an attached run on kubernetes: nothing deletes a detached pod when it exits"))
	}
	keys, err := cli.ParseDetachKeys(o.detachKeys)
	if err != nil {
		return nil, nil, cli.UsageError(fmt.Errorf("--detach-keys: %w", err))
	}
	env, err := cli.ParseEnv(o.env)
	if err != nil {
		return nil, nil, err
	}
	return env, keys, nil
}

func (r *Runtime) run(ctx context.Context, h cli.Host, o runOptions, image string, cmdArgs []string) error {
	env, keys, err := o.check(cmdArgs)
	if err != nil {
		return err
	}
	project, agent, err := cli.AgentIdentity(o.project, o.agent)
	if err != nil {
		return err
	}
	home, err := h.Home()
	if err != nil {
		return err
	}
	ca, err := home.LoadCA()
	if err != nil {
		return cli.UsageError(fmt.Errorf("load the clawker CA from %s (run clawker init first): %w", home.Dir, err))
	}
	signer, err := home.LoadSigningKey()
	if err != nil {
		return cli.UsageError(fmt.Errorf("load the assertion signing key from %s (run clawker init first): %w", home.Dir, err))
	}
	api, ns, err := r.client()
	if err != nil {
		return err
	}
	spec, err := agentSpec(ctx, api, ns, o, image, cmdArgs, env)
	if err != nil {
		return err
	}
	// The gateway's interception CA, which cp up gave the CP: the agent
	// trusts it for the hosts the egress policy intercepts.
	egressCA, err := os.ReadFile(home.Path(consts.EgressCAFile))
	if err != nil {
		return cli.UsageError(fmt.Errorf("read the egress CA from %s (clawker cp up makes it): %w", home.Dir, err))
	}
	spec.Project, spec.Agent, spec.EgressCA = project, agent, egressCA
	pod, err := kubeagent.Create(ctx, kubeagent.Clients{Core: api.CoreV1(), Networking: api.NetworkingV1()}, ca, signer, spec, h.Now())
	if apierrors.IsAlreadyExists(err) {
		name := kubeagent.PodName(project, agent)
		return cli.UsageError(fmt.Errorf("an agent pod named %s already exists in %s: remove it with clawker rm%s %s", name, ns, projectFlag(o.project), o.agent))
	}
	if err != nil {
		return fmt.Errorf("create agent pod: %w", err)
	}
	id := auth.PodWorkloadID(string(pod.UID))
	if o.detach {
		fmt.Fprintln(h.Out(), id)
		return nil
	}
	ended := func(ctx context.Context) (int, bool) {
		p, err := api.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return agentExit(nil)
		case err != nil:
			return 0, false
		}
		return agentExit(p)
	}
	if o.tty {
		err = h.Terminal(ctx, id, o.interactive, keys, ended)
	} else {
		fmt.Fprintf(h.ErrOut(), "agent %s started (pod %s/%s); Ctrl-C detaches, the agent keeps running\n", auth.AgentFullName(project, agent), ns, pod.Name)
		err = follow(ctx, h, api, pod, ended, o.debug)
	}
	if o.rm {
		// As docker run --rm: the pod goes once its command has exited or
		// it could not start; a detached run leaves it running.
		bg := context.WithoutCancel(ctx)
		if _, exited := ended(bg); exited || errors.Is(err, errNotStarted) {
			_ = api.CoreV1().Pods(ns).Delete(bg, pod.Name, metav1.DeleteOptions{})
		}
	}
	return err
}

// errNotStarted marks a pod that could not start (run --rm deletes it).
var errNotStarted = errors.New("agent pod cannot start")

// agentSpec is the pod for o, addressed to the CP of namespace ns: its
// Service's cluster IP, which outlives the CP's restarts.
func agentSpec(ctx context.Context, api kubernetes.Interface, ns string, o runOptions, image string, cmdArgs, env []string) (kubeagent.Spec, error) {
	svc, err := api.CoreV1().Services(ns).Get(ctx, kubecp.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return kubeagent.Spec{}, cli.UnavailableError(fmt.Errorf("no control plane in namespace %s: start it with clawker --runtime kubernetes -n %s cp up", ns, ns))
	}
	if err != nil {
		return kubeagent.Spec{}, apiError("find the control plane", err)
	}
	clawkerd := o.clawkerdImage
	if clawkerd == "" {
		clawkerd = svc.Annotations[kubecp.ClawkerdImageAnnotation]
	}
	if clawkerd == "" {
		return kubeagent.Spec{}, cli.UsageError(errors.New("no clawkerd image: give --clawkerd-image, or record one with cp up --clawkerd-image"))
	}
	ip := svc.Spec.ClusterIP
	peer := kubecp.AgentPeer()
	return kubeagent.Spec{
		Namespace: ns, Image: image, ClawkerdImage: clawkerd, Cmd: cmdArgs, User: o.user, Env: env, TTY: o.tty,
		CPAgentAddr: net.JoinHostPort(ip, strconv.Itoa(consts.PortAgent)),
		CPTokenURL:  "https://" + net.JoinHostPort(ip, strconv.Itoa(consts.PortToken)) + consts.TokenPath,
		CPPeer:      &peer,
	}, nil
}

// follow streams the agent container's output from its start until it
// exits, and returns its exit code. Ctrl-C detaches.
func follow(ctx context.Context, h cli.Host, api kubernetes.Interface, pod *corev1.Pod, ended func(context.Context) (int, bool), debug bool) error {
	pods := api.CoreV1().Pods(pod.Namespace)
	detached := func() error {
		fmt.Fprintf(h.ErrOut(), "\ndetached from %s (still running)\n", pod.Name)
		return nil
	}
	if err := waitStarted(ctx, pods.Get, pod.Name); err != nil {
		if ctx.Err() != nil {
			return detached()
		}
		return err
	}
	rc, err := pods.GetLogs(pod.Name, &corev1.PodLogOptions{Container: consts.PodAgentContainer, Follow: true}).Stream(ctx)
	if err == nil {
		var w io.Writer = h.Out()
		cf := cli.ConsoleFilter(h.Out())
		if !debug {
			w = cf
		}
		_, _ = io.Copy(w, rc)
		_ = cf.Flush()
		rc.Close()
	}
	if ctx.Err() != nil {
		return detached()
	}
	// The log ends with the container; its status follows shortly after.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if code, ok := ended(wctx); ok {
			return cli.ExitStatus(code)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return detached()
			}
			return fmt.Errorf("agent pod %s: output ended but the pod has not exited", pod.Name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type podGetter func(context.Context, string, metav1.GetOptions) (*corev1.Pod, error)

// waitStarted waits until the agent container runs or has run, failing
// on a pod that cannot start (its init container failed, an image that
// is not there).
func waitStarted(ctx context.Context, get podGetter, name string) error {
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	for {
		p, err := get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, s := range p.Status.ContainerStatuses {
				if s.Name == consts.PodAgentContainer && (s.State.Running != nil || s.State.Terminated != nil) {
					return nil
				}
			}
			if why := stuck(p); why != "" {
				return fmt.Errorf("%w: %s: %s", errNotStarted, name, why)
			}
		} else if apierrors.IsNotFound(err) {
			return cli.NotFoundError(fmt.Errorf("agent pod %s was deleted before it started", name))
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%w: %s did not start within %s (kubectl describe pod %s)", errNotStarted, name, startWait, name)
			}
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stuck is why a pending pod will not start without help, else "".
func stuck(p *corev1.Pod) string {
	if p.Status.Phase == corev1.PodFailed {
		return "it failed (" + p.Status.Reason + " " + p.Status.Message + ")"
	}
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				return fmt.Sprintf("container %s: %s: %s", s.Name, w.Reason, w.Message)
			}
		}
	}
	return ""
}

// projectFlag is " --project p" for a message's suggested command.
func projectFlag(p string) string {
	if p == "" {
		return ""
	}
	return " --project " + p
}
