package kubecli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/cli"
	"github.com/clawker/clawker/internal/kubeagent"
	"github.com/clawker/clawker/internal/kubecp"
	"github.com/clawker/clawker/internal/version"
)

func (r *Runtime) rmCmd(h cli.Host) *cobra.Command {
	var project string
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [flags] AGENT [AGENT...]",
		Short: "Delete agent pods",
		Long: `rm deletes agent pods (their bootstrap Secrets go with them). The control
plane sees the pod go and evicts its registry row. A pod has no stopped
state, so unlike docker rm a running agent is deleted too: its command gets
SIGTERM and the pod's grace period, or none with --force.`,
		Example: "  clawker --runtime kubernetes rm dev\n  clawker --runtime kubernetes rm --force --project web reviewer tester",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			for _, arg := range args {
				p, a, err := cli.AgentIdentity(project, arg)
				if err != nil {
					return err
				}
				names = append(names, kubeagent.PodName(p, a))
			}
			api, ns, err := r.client()
			if err != nil {
				return err
			}
			opts := metav1.DeleteOptions{}
			if force {
				zero := int64(0)
				opts.GracePeriodSeconds = &zero
			}
			var errs []error
			for i, name := range names {
				err := api.CoreV1().Pods(ns).Delete(cmd.Context(), name, opts)
				switch {
				case apierrors.IsNotFound(err):
					errs = append(errs, cli.NotFoundError(fmt.Errorf("no agent %s%s in namespace %s: see clawker agents -a", args[i], inProject(project), ns)))
				case err != nil:
					errs = append(errs, apiError("delete "+name, err))
				default:
					fmt.Fprintln(h.Out(), args[i])
				}
			}
			if len(errs) == 1 {
				return errs[0]
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agents' project")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete at once, without the grace period")
	return cmd
}

func inProject(p string) string {
	if p == "" {
		return ""
	}
	return " in project " + p
}

// cpReadyWait bounds cp up's wait for the CP pod to be ready.
const cpReadyWait = 3 * time.Minute

func (r *Runtime) cpCmd(h cli.Host) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cp",
		Short: "Deploy, inspect or remove the control plane in the namespace",
	}
	var s kubecp.Spec
	var storage string
	up := &cobra.Command{
		Use:   "up",
		Short: "Deploy the control plane into the namespace and wait until it is ready",
		Long: `up applies the control plane's objects to the namespace: a one-replica
Deployment of --image with its service account and Role (read and contain
pods, read NetworkPolicies), a Secret of this clawker home's CP cert, key,
CA and assertion public key (never the CA's or the signer's private key),
the registry's PersistentVolumeClaim, and a Service the agents reach it at.
Run again, it updates them. The images must be where the cluster's nodes
can get them (cp images builds them; clawker pushes nothing).`,
		Example: `  clawker --runtime kubernetes -n agents cp up --image registry.example/clawker-cp:v1 --clawkerd-image registry.example/clawkerd:v1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if s.Image == "" {
				return cli.UsageError(errors.New("--image is required: the clawker-cp image the cluster runs"))
			}
			q, err := resource.ParseQuantity(storage)
			if err != nil {
				return cli.UsageError(fmt.Errorf("--storage %q: %w", storage, err))
			}
			s.Storage = q
			return r.cpUp(cmd.Context(), h, s)
		},
	}
	up.Flags().StringVar(&s.Image, "image", "", "the clawker-cp image (required)")
	up.Flags().StringVar(&s.ClawkerdImage, "clawkerd-image", "", "the clawkerd image agents install from, recorded for clawker run")
	up.Flags().StringVar(&storage, "storage", "1Gi", "size of the registry's volume claim")
	up.Flags().StringVar(&s.VolumeName, "volume", "", "bind the registry's claim to this PersistentVolume (default: the default storage class provisions one)")
	var withData bool
	down := &cobra.Command{
		Use:     "down",
		Short:   "Remove the control plane from the namespace (agents stay, unreachable)",
		Example: "  clawker --runtime kubernetes cp down\n  clawker --runtime kubernetes cp down --volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, ns, err := r.client()
			if err != nil {
				return err
			}
			if err := kubecp.Delete(cmd.Context(), api, ns, withData); err != nil {
				return apiError("cp down", err)
			}
			fmt.Fprintf(h.Out(), "control plane removed from %s\n", ns)
			return nil
		},
	}
	down.Flags().BoolVarP(&withData, "volumes", "v", false, "also delete the registry's volume claim")
	status := &cobra.Command{
		Use:     "status",
		Short:   "Show the control plane's pod",
		Example: "  clawker --runtime kubernetes cp status",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, ns, err := r.client()
			if err != nil {
				return err
			}
			pod, err := cpPod(cmd.Context(), api, ns)
			if err != nil {
				return err
			}
			fmt.Fprintf(h.Out(), "control plane ready: pod %s/%s (%s), image %s\n", ns, pod.Name, pod.Status.PodIP, pod.Spec.Containers[0].Image)
			return nil
		},
	}
	var repo, tag string
	images := &cobra.Command{
		Use:   "images",
		Short: "Build the control plane's and clawkerd's images in the local Docker engine, to push where the nodes pull",
		Long: `images builds REPO/clawker-cp:TAG and REPO/clawkerd:TAG in the local Docker
engine, each one static binary alone (found as clawker run finds clawkerd:
next to clawker, or CLAWKER_CP_BIN and CLAWKER_CLAWKERD_BIN). Push them
where the cluster's nodes pull from (or load them into a local cluster),
then give them to cp up.`,
		Example: `  clawker --runtime kubernetes cp images --repo registry.example/clawker --tag v1
  docker push registry.example/clawker/clawker-cp:v1
  docker push registry.example/clawker/clawkerd:v1
  clawker --runtime kubernetes cp up --image registry.example/clawker/clawker-cp:v1 --clawkerd-image registry.example/clawker/clawkerd:v1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if repo == "" {
				return cli.UsageError(errors.New("--repo must not be empty"))
			}
			if tag == "" {
				tag = version.Version
			}
			refs := map[string]string{}
			for _, bin := range []string{"clawker-cp", "clawkerd"} {
				refs[bin] = repo + "/" + bin + ":" + tag
				if err := h.BinaryImage(cmd.Context(), refs[bin], bin); err != nil {
					return err
				}
				fmt.Fprintln(h.Out(), refs[bin])
			}
			fmt.Fprintf(h.ErrOut(), "push them where the nodes pull from, then: clawker --runtime kubernetes cp up --image %s --clawkerd-image %s\n",
				refs["clawker-cp"], refs["clawkerd"])
			return nil
		},
	}
	images.Flags().StringVar(&repo, "repo", "clawker", "repository prefix of the two images")
	// No default in the flag: the reference docs would carry the version
	// of whatever built them.
	images.Flags().StringVar(&tag, "tag", "", "tag of the two images (default: this clawker's version)")
	cmd.AddCommand(up, down, status, images)
	return cmd
}

// cpUp applies the CP's objects with this home's keys and waits for a
// ready pod of the new template.
func (r *Runtime) cpUp(ctx context.Context, h cli.Host, s kubecp.Spec) error {
	home, err := h.Home()
	if err != nil {
		return err
	}
	// The gateway's interception CA, made here for a home initialised
	// before it existed (as the Docker cp up does).
	if err := cli.EnsureEgressCA(home); err != nil {
		return err
	}
	if s.Keys, err = cpKeys(home); err != nil {
		return err
	}
	s.Env = cli.PassedCPEnv()
	api, ns, err := r.client()
	if err != nil {
		return err
	}
	s.Namespace = ns
	objs, err := kubecp.Build(s)
	if err != nil {
		return cli.UsageError(err)
	}
	if err := kubecp.Apply(ctx, api, objs); err != nil {
		return apiError("cp up", err)
	}
	wctx, cancel := context.WithTimeout(ctx, cpReadyWait)
	defer cancel()
	for {
		d, err := api.AppsV1().Deployments(ns).Get(wctx, kubecp.Name, metav1.GetOptions{})
		if err == nil && kubecp.Rolled(d) {
			if pod, err := cpPod(wctx, api, ns); err == nil {
				fmt.Fprintf(h.Out(), "control plane ready in %s: pod %s\n", ns, pod.Name)
				return nil
			}
		}
		select {
		case <-wctx.Done():
			return cli.UnavailableError(fmt.Errorf("the control plane in %s is not ready after %s: kubectl -n %s describe pods -l %s=%s",
				ns, cpReadyWait, ns, kubecp.AppLabel, kubecp.Name))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// cpKeys reads the CP's files from the home: its cert and key, the CA
// cert, the assertion public key and the egress CA.
func cpKeys(home auth.Home) (map[string][]byte, error) {
	keys := map[string][]byte{}
	for _, f := range kubecp.KeyFiles {
		b, err := os.ReadFile(home.Path(f))
		if err != nil {
			return nil, cli.UsageError(fmt.Errorf("clawker home %s is not initialised (%s): run clawker init", home.Dir, err))
		}
		keys[f] = b
	}
	return keys, nil
}
