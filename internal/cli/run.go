package cli

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/consts"
)

type runOptions struct {
	project string
	agent   string
	name    string // --name, docker's spelling of --agent
	detach  bool
	debug   bool
	rm      bool
	pull    string
	// entrypoint replaces the image's ENTRYPOINT (and drops its CMD), as
	// docker run --entrypoint does; nil when not given.
	entrypoint *string
	term       runTermFlags // -i, -t, --detach-keys (runterm.go)
	cf         configFlags  // the flags clawker.yaml can also set (runconfig.go)
}

func (a *app) runCmd() *cobra.Command {
	var o runOptions
	var entrypoint string
	cmd := &cobra.Command{
		Use:   "run [flags] [IMAGE [CMD...]]",
		Short: "Create and start an agent container from any image",
		Long: `run creates an agent container from IMAGE (any unmodified image: busybox,
alpine, debian, node...). clawkerd becomes its entrypoint; the image's own
entrypoint and cmd (or CMD given here) become the user command that clawkerd
starts once the control plane has registered and initialised the agent.

Before the container starts, run mints its certificate (bound to the
container ID), a single-use registration assertion, and copies them with the
clawkerd binary into the container. The control plane does the rest.

Attached by default: the agent's console is streamed and run exits with the
user command's exit code. With -d it prints the container ID and returns.
An image that is not local is pulled through the engine first (--pull).

clawker.yaml in --project-dir supplies defaults for IMAGE, CMD and most
flags (image, cmd, user, workdir, env, env_file, secrets, volumes,
resources, state, hooks); flags override it. clawker config show prints the
result. Limits default to no CPU or memory cap and at most 4096 processes.`,
		Example: `  clawker run --agent dev busybox sleep 3600
  clawker run --rm --name once -w /tmp --entrypoint sh busybox -c pwd
  clawker run -d --project web --agent reviewer -e MODE=review node:22 npm test
  clawker run -d --agent scratch --user 1000 -v "$PWD:/work" debian:bookworm`,
		RunE: func(cmd *cobra.Command, args []string) error {
			eff, dir, err := effectiveConfig(cmd.Flags(), o.cf, args)
			if err != nil {
				return err
			}
			if err := o.docker(cmd.Flags().Changed("entrypoint"), entrypoint); err != nil {
				return err
			}
			return a.runAgent(cmd.Context(), o, eff, dir)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVarP(&o.project, "project", "p", "", "project the agent belongs to (empty: a global agent)")
	cmd.Flags().StringVarP(&o.agent, "agent", "a", "", "agent name, unique within the project (required)")
	cmd.Flags().StringVar(&o.name, "name", "", "same as --agent (docker's spelling)")
	cmd.Flags().BoolVar(&o.rm, "rm", false, "remove the agent container (and its clawkerd volume) when it exits")
	cmd.Flags().StringVar(&entrypoint, "entrypoint", "", "replace the image's ENTRYPOINT (its CMD is then dropped too, as docker does)")
	cmd.Flags().StringVar(&o.pull, "pull", pullMissing, "pull the image before running: missing, always or never")
	cmd.Flags().BoolVarP(&o.detach, "detach", "d", false, "start the agent and return its container ID")
	o.term.add(cmd)
	addConfigFlags(cmd.Flags(), &o.cf)
	cmd.Flags().BoolVar(&o.debug, "debug", false, "attached: also show clawkerd's own log lines")
	return cmd
}

// docker folds docker's spellings into the options: --name is --agent,
// --entrypoint is kept only when given.
func (o *runOptions) docker(epChanged bool, ep string) error {
	if o.name != "" {
		if o.agent != "" && o.agent != o.name {
			return usageErrorf("--name %q and --agent %q disagree: give one", o.name, o.agent)
		}
		o.agent = o.name
	}
	if epChanged {
		o.entrypoint = &ep
	}
	switch o.pull {
	case pullMissing, pullAlways, pullNever:
	default:
		return usageErrorf("--pull must be missing, always or never, not %q", o.pull)
	}
	return nil
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

// runPlan is a validated run request with everything loaded from the
// home and the project before Docker is asked anything.
type runPlan struct {
	o         runOptions
	project   auth.ProjectSlug
	agent     auth.AgentName
	image     string
	cmd       []string // from the flags or clawker.yaml; empty: the image's
	env       []string
	eff       *config.Effective
	resources container.Resources
	secrets   map[string][]byte
	home      auth.Home
	ca        *auth.CA
	signer    *ecdsa.PrivateKey
	clawkerd  string // host path of the clawkerd binary
}

func (a *app) runAgent(ctx context.Context, o runOptions, eff *config.Effective, projectDir string) error {
	p, err := a.planRun(o, eff, projectDir)
	if err != nil {
		return err
	}
	c, err := a.docker(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return a.launchAgent(ctx, c, p)
}

// planRun validates the request and loads the CA, the signing key, the
// secrets and the clawkerd binary: a bad request never touches Docker.
func (a *app) planRun(o runOptions, eff *config.Effective, projectDir string) (runPlan, error) {
	if o.agent == "" {
		return runPlan{}, usageErrorf("--agent (or --name) is required: name the agent (e.g. --agent dev)")
	}
	project, agent, err := agentIdentity(o.project, o.agent)
	if err != nil {
		return runPlan{}, err
	}
	p := runPlan{o: o, project: project, agent: agent, image: eff.Image.V, cmd: eff.Cmd.V, env: eff.EnvList(), eff: eff}
	if p.image == "" {
		return runPlan{}, usageErrorf("no image: give IMAGE, or image: in %s", config.FileName)
	}
	if p.resources, err = agentResources(eff); err != nil {
		return runPlan{}, err
	}
	if p.secrets, err = eff.ReadSecrets(projectDir); err != nil {
		return runPlan{}, withCode(ExitUsage, err)
	}
	h, err := a.home()
	if err != nil {
		return runPlan{}, err
	}
	p.home = h
	if p.ca, err = h.LoadCA(); err != nil {
		return runPlan{}, withCode(ExitUsage, fmt.Errorf("load the clawker CA from %s (run clawker init first): %w", h.Dir, err))
	}
	if p.signer, err = h.LoadSigningKey(); err != nil {
		return runPlan{}, withCode(ExitUsage, fmt.Errorf("load the assertion signing key from %s (run clawker init first): %w", h.Dir, err))
	}
	if p.clawkerd, err = findBinary("clawkerd", EnvClawkerdBin); err != nil {
		return runPlan{}, err
	}
	return p, nil
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
// wait, when set, was registered before the start (run --rm).
func (a *app) followAgent(ctx context.Context, c containerAttacher, id string, att *mobyclient.ContainerAttachResult, wait *mobyclient.ContainerWaitResult, debug bool) error {
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
	if wait == nil {
		w := c.ContainerWait(ctx, id, mobyclient.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
		wait = &w
	}
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
