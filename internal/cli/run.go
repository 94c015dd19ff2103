package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

type runOptions struct {
	project string
	agent   string
	env     []string
	user    string
	detach  bool
	dir     string
	volumes []string
	debug   bool
}

func (a *app) runCmd() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [CMD...]",
		Short: "Create and start an agent container from any image",
		Long: `run creates an agent container from IMAGE (any unmodified image: busybox,
alpine, debian, node...). clawkerd becomes its entrypoint; the image's own
entrypoint and cmd (or CMD given here) become the user command that clawkerd
starts once the control plane has registered and initialised the agent.

Before the container starts, run mints its certificate (bound to the
container ID), a single-use registration assertion, and copies them with the
clawkerd binary into the container. The control plane does the rest.

Attached by default: the agent's console is streamed and run exits with the
user command's exit code. With -d it prints the container ID and returns.`,
		Example: `  clawker run --agent dev busybox sleep 3600
  clawker run -d --project web --agent reviewer -e MODE=review node:22 npm test
  clawker run -d --agent scratch --user 1000 -v "$PWD:/work" debian:bookworm`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runAgent(cmd.Context(), o, args[0], args[1:])
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVarP(&o.project, "project", "p", "", "project the agent belongs to (empty: a global agent)")
	cmd.Flags().StringVarP(&o.agent, "agent", "a", "", "agent name, unique within the project (required)")
	cmd.Flags().StringArrayVarP(&o.env, "env", "e", nil, "environment variable KEY=VALUE for the user command (repeatable; KEY alone copies it from here)")
	cmd.Flags().StringVarP(&o.user, "user", "u", "", "user the user command runs as (name or uid[:gid]; default: the image's USER)")
	cmd.Flags().BoolVarP(&o.detach, "detach", "d", false, "start the agent and return its container ID")
	cmd.Flags().StringVar(&o.dir, "project-dir", ".", "directory holding clawker.yaml (hooks)")
	cmd.Flags().StringArrayVarP(&o.volumes, "volume", "v", nil, "bind mount or named volume SRC:DST[:ro] (repeatable)")
	cmd.Flags().BoolVar(&o.debug, "debug", false, "attached: also show clawkerd's own log lines")
	return cmd
}

// agentIdentity validates the user-typed names before anything touches
// Docker, so a bad name never leaves a half-created container.
func agentIdentity(project, agent string) (auth.ProjectSlug, auth.AgentName, error) {
	an, err := auth.NewAgentName(agent)
	if err != nil {
		return auth.ProjectSlug{}, auth.AgentName{}, usageErrorf("invalid --agent %q: %v", agent, err)
	}
	ps, err := auth.NewProjectSlug(project)
	if err != nil {
		return auth.ProjectSlug{}, auth.AgentName{}, usageErrorf("invalid --project %q: %v", project, err)
	}
	return ps, an, nil
}

func parseEnv(kvs []string) ([]string, error) {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		k, _, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, usageErrorf("invalid --env %q: want KEY=VALUE", kv)
		}
		if strings.HasPrefix(k, "CLAWKER_") {
			return nil, usageErrorf("invalid --env %q: CLAWKER_ variables are set by clawker", kv)
		}
		if !ok {
			v, present := os.LookupEnv(k)
			if !present {
				continue
			}
			kv = k + "=" + v
		}
		out = append(out, kv)
	}
	return out, nil
}

func (a *app) runAgent(ctx context.Context, o runOptions, image string, userCmd []string) error {
	if o.agent == "" {
		return usageErrorf("--agent is required: name the agent (e.g. --agent dev)")
	}
	project, agent, err := agentIdentity(o.project, o.agent)
	if err != nil {
		return err
	}
	env, err := parseEnv(o.env)
	if err != nil {
		return err
	}
	for _, v := range o.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") ||
			(len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			return usageErrorf("invalid --volume %q: want SRC:/container/path[:ro]", v)
		}
		if r := reservedMount(parts[1]); r != "" {
			return usageErrorf("invalid --volume %q: it would cover %s, which clawker owns", v, r)
		}
	}
	h, err := a.home()
	if err != nil {
		return err
	}
	ca, err := h.LoadCA()
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("load the clawker CA from %s (run clawker init first): %w", h.Dir, err))
	}
	signer, err := h.LoadSigningKey()
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("load the assertion signing key from %s (run clawker init first): %w", h.Dir, err))
	}
	clawkerd, err := findBinary("clawkerd", EnvClawkerdBin)
	if err != nil {
		return err
	}
	c, err := a.docker(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	img, err := c.ImageInspect(ctx, image)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return withCode(ExitNotFound, fmt.Errorf("image %s not found locally: docker pull %s (or build it) first", image, image))
		}
		return fmt.Errorf("inspect image %s: %w", image, err)
	}
	if len(userCmd) == 0 && img.Config != nil {
		userCmd = append(append([]string{}, img.Config.Entrypoint...), img.Config.Cmd...)
	}
	if len(userCmd) == 0 {
		return usageErrorf("image %s has no entrypoint or cmd: give the command to run after the image name", image)
	}
	runAs := o.user
	if runAs == "" && img.Config != nil {
		runAs = img.Config.User
	}
	if err := ensureNetwork(ctx, c); err != nil {
		return err
	}

	fullName := auth.AgentFullName(project, agent)
	labels := managedLabels(map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: agent.String()})
	if !project.IsZero() {
		labels[consts.LabelProject] = project.String()
	}
	env = append(env,
		consts.EnvAgent+"="+agent.String(),
		consts.EnvProject+"="+project.String(),
		consts.EnvUser+"="+runAs,
		consts.EnvCPAgentAddr+"="+fmt.Sprintf("%s:%d", consts.ControlPlaneContainer, consts.PortAgent),
		consts.EnvCPTokenURL+"="+fmt.Sprintf("https://%s:%d%s", consts.ControlPlaneContainer, consts.PortToken, consts.TokenPath),
	)
	created, err := c.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: fullName,
		Config: &container.Config{
			Image:      image,
			Entrypoint: []string{consts.ClawkerdPath, "--"},
			Cmd:        userCmd,
			Env:        env,
			// clawkerd is PID 1 as root: it reads its 0400 bootstrap files
			// and drops to CLAWKER_USER for the user command.
			User:         "0:0",
			Labels:       labels,
			AttachStdout: !o.detach,
			AttachStderr: !o.detach,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode(consts.NetworkName),
			Binds:       o.volumes,
			Mounts:      []mount.Mount{clawkerdMount()},
			// Raw sockets would let an agent spoof another container's IP
			// on clawker-net (ARP), undermining the peer-IP identity anchor.
			CapDrop: []string{"NET_RAW"},
		},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			consts.NetworkName: {},
		}},
	})
	if err != nil {
		if cerrdefs.IsConflict(err) {
			return withCode(ExitUsage, fmt.Errorf("an agent container named %s already exists: remove it with clawker rm %s (or docker rm -f %s)", fullName, agent, fullName))
		}
		return fmt.Errorf("create agent container: %w", err)
	}
	id := created.ID
	started := false
	defer func() {
		if !started { // nothing half-created: an unstarted container goes
			_, _ = c.ContainerRemove(context.WithoutCancel(ctx), id, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	}()

	now := a.now()
	leaf, err := ca.MintAgent(project, agent, id, now)
	if err != nil {
		return fmt.Errorf("mint agent certificate: %w", err)
	}
	assertion, err := auth.MintAssertion(signer, id, now)
	if err != nil {
		return fmt.Errorf("mint registration assertion: %w", err)
	}
	keyPEM, err := auth.KeyPEM(leaf.Key)
	if err != nil {
		return err
	}
	tb := newTarBuilder(now)
	boot := strings.TrimPrefix(consts.BootstrapDir, "/")
	if err := tb.dir(boot, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{consts.BootstrapCert, auth.CertPEM(leaf.Cert)},
		{consts.BootstrapKey, keyPEM},
		{consts.BootstrapCA, auth.CertPEM(ca.Cert)},
		{consts.BootstrapAssert, []byte(assertion)},
	} {
		if err := tb.file(boot+"/"+f.name, 0o400, f.data); err != nil {
			return err
		}
	}
	if err := tb.hostFile(strings.TrimPrefix(consts.ClawkerdPath, "/"), 0o755, clawkerd); err != nil {
		return err
	}
	if err := stageFiles(ctx, tb, strings.TrimPrefix(consts.StagingDir, "/"), o.dir); err != nil {
		return err
	}
	data, err := tb.bytes()
	if err != nil {
		return err
	}
	if _, err := c.CopyToContainer(ctx, id, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: bytes.NewReader(data)}); err != nil {
		return fmt.Errorf("copy clawkerd and bootstrap files into %s: %w", fullName, err)
	}

	var attached *mobyclient.ContainerAttachResult
	if !o.detach {
		// Attach before start so the first line of output is not lost.
		res, err := c.ContainerAttach(ctx, id, mobyclient.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
		if err != nil {
			return fmt.Errorf("attach to %s: %w", fullName, err)
		}
		attached = &res
		defer res.Close()
	}
	if _, err := c.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start %s: %w", fullName, err)
	}
	started = true
	if os.Getenv(EnvCPAdminAddr) == "" {
		if _, err := publishedAddr(ctx, c, consts.PortAdmin); err != nil {
			fmt.Fprintf(a.errOut, "clawker: warning: the control plane is not running; %s waits for it to register and start its command (clawker cp up)\n", fullName)
		}
	}
	if o.detach {
		fmt.Fprintln(a.out, id)
		return nil
	}
	fmt.Fprintf(a.errOut, "agent %s started (%s); Ctrl-C detaches, the agent keeps running\n", fullName, shortID(id))
	pctx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	go a.showProgress(pctx, a.errOut, project.String(), agent.String(), id)
	return a.followAgent(ctx, c, id, attached, o.debug)
}

// reservedMount returns the clawker-owned directory a --volume target
// would cover (it, a parent or a child of it), else "". A mount there
// would hide clawkerd or the bootstrap files, or keep the init marker
// past rm.
func reservedMount(target string) string {
	dst := path.Clean(target)
	for _, r := range []string{path.Dir(consts.BootstrapDir), path.Dir(consts.InitMarkerPath)} {
		if dst == "/" || dst == r || strings.HasPrefix(dst, r+"/") || strings.HasPrefix(r, dst+"/") {
			return r
		}
	}
	return ""
}

// clawkerdMount is the agent's own anonymous volume at ClawkerdDir, which
// the copy before start fills with clawkerd. A volume, not the writable
// layer: on a FUSE storage driver (fuse-overlayfs) every page fault of the
// 19 MB binary in the writable layer is a round trip to the FUSE daemon,
// which made clawkerd's start 2-3× slower (bench/FINDINGS.md). The volume
// is a plain host directory; it goes with the container (rm -v, clawker
// rm), and its label lets the CP prune it after a plain docker rm.
func clawkerdMount() mount.Mount {
	return mount.Mount{
		Type:   mount.TypeVolume,
		Target: consts.ClawkerdDir,
		VolumeOptions: &mount.VolumeOptions{
			NoCopy: true, // nothing of the image belongs there
			Labels: managedLabels(map[string]string{consts.LabelPurpose: consts.PurposeClawkerdBin}),
		},
	}
}

// followAgent streams the attached console until the container exits and
// returns its exit code. Ctrl-C detaches without stopping the agent.
func (a *app) followAgent(ctx context.Context, c mobyclient.APIClient, id string, att *mobyclient.ContainerAttachResult, debug bool) error {
	copied := make(chan error, 1)
	go func() {
		var errW io.Writer = a.errOut
		f := &consoleFilter{w: a.errOut}
		if !debug {
			errW = f
		}
		_, err := stdcopy.StdCopy(a.out, errW, att.Reader)
		_ = f.Flush()
		copied <- err
	}()
	wait := c.ContainerWait(ctx, id, mobyclient.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-ctx.Done():
		fmt.Fprintf(a.errOut, "\ndetached from %s (still running)\n", shortID(id))
		return nil
	case err := <-wait.Error:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("wait for %s: %w", shortID(id), err)
	case res := <-wait.Result:
		if err := <-copied; err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(a.errOut, "clawker: console stream: %v\n", err)
		}
		if res.StatusCode != 0 {
			return silentExit{code: int(res.StatusCode)}
		}
		return nil
	}
}
