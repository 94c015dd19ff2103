package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	mobyclient "github.com/moby/moby/client"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// launchAgent creates the agent's network and container, copies its
// bootstrap bundle in, starts it, and follows its console unless -d.
// Whatever it made is removed again if the agent never starts.
func (a *app) launchAgent(ctx context.Context, c runDocker, p runPlan) error {
	project, agent, image, env, resources := p.project, p.agent, p.image, p.env, p.resources
	userCmd, runAs, err := a.imageDefaults(ctx, c, p)
	if err != nil {
		return err
	}
	// The agent's own network: only it and the CP are on it, so no other
	// agent can reach it, and the CP's address there is pinned.
	anet, undoNet, err := prepareAgentNet(ctx, c, p.project, p.agent)
	if err != nil {
		return err
	}
	netStarted := false
	defer func() {
		if !netStarted {
			undoNet()
		}
	}()

	mounts := []mount.Mount{clawkerdMount()}
	var stateMnts []mount.Mount
	var stateUser agentUser
	if len(p.eff.State) > 0 {
		if stateUser, err = resolveAgentUser(ctx, c, image, runAs); err != nil {
			return withCode(ExitUsage, err)
		}
		if stateMnts, err = stateMounts(project.String(), agent.String(), valuesOf(p.eff.State), stateUser); err != nil {
			return err
		}
		mounts = append(mounts, stateMnts...)
	}

	fullName := auth.AgentFullName(project, agent)
	a.installEgressPolicy(ctx, c, project, p.eff)
	created, err := c.ContainerCreate(ctx, agentContainerSpec(agentSpec{
		project: project, agent: agent, image: image, cmd: userCmd, user: runAs, env: env,
		workdir: p.eff.Workdir.V, attach: !p.o.detach, autoRemove: p.o.rm, net: anet,
		binds: valuesOf(p.eff.Volumes), mounts: mounts, resources: resources, tmpfs: secretsTmpfs(p.eff),
		creds: credentialKinds(p.eff.Credentials.V), tty: p.o.term.tty, dns: []netip.Addr{anet.CPAddr()},
	}))
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
	creds, err := mintBootstrap(p.ca, p.signer, project, agent, id, now)
	if err != nil {
		return err
	}
	caFiles, err := egressCAFiles(ctx, c, id, p.home)
	if err != nil {
		return err
	}
	sshFiles, err := sshConfigFiles(ctx, c, id)
	if err != nil {
		return err
	}
	data, err := bootstrapBundle(ctx, now, creds, p.clawkerd, p.eff.Hooks.V, p.secrets, append(caFiles, sshFiles...)...)
	if err != nil {
		return err
	}
	if _, err := c.CopyToContainer(ctx, id, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: bytes.NewReader(data)}); err != nil {
		return fmt.Errorf("copy clawkerd and bootstrap files into %s: %w", fullName, err)
	}
	if err := chownState(ctx, c, id, stateMnts, stateUser); err != nil {
		return err
	}

	var attached *mobyclient.ContainerAttachResult
	if !p.o.detach && !p.o.term.tty {
		// Attach before start so the first line of output is not lost.
		res, err := c.ContainerAttach(ctx, id, mobyclient.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
		if err != nil {
			return fmt.Errorf("attach to %s: %w", fullName, err)
		}
		attached = &res
		defer res.Close()
	}
	var waitRemoved *mobyclient.ContainerWaitResult
	if !p.o.detach && p.o.rm {
		// Before start: an agent that exits at once is removed before a
		// later wait could find it (docker run --rm waits the same way).
		w := c.ContainerWait(ctx, id, mobyclient.ContainerWaitOptions{Condition: container.WaitConditionRemoved})
		waitRemoved = &w
	}
	if _, err := c.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start %s: %w", fullName, err)
	}
	started, netStarted = true, true
	if os.Getenv(EnvCPAdminAddr) == "" {
		if _, err := publishedAddr(ctx, c, consts.PortAdmin); err != nil {
			fmt.Fprintf(a.errOut, "clawker: warning: the control plane is not running; %s waits for it to register and start its command (clawker cp up)\n", fullName)
		}
	}
	if p.o.detach {
		fmt.Fprintln(a.out, id)
		return nil
	}
	if p.o.term.tty {
		return a.runTerminal(ctx, containerEnd{c, id}, id, &adminv1.AgentRef{ContainerId: id}, p.o.term.interactive, p.o.term.keys)
	}
	fmt.Fprintf(a.errOut, "agent %s started (%s); Ctrl-C detaches, the agent keeps running\n", fullName, shortID(id))
	pctx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	go a.showProgress(pctx, a.errOut, project.String(), agent.String(), id)
	err = a.followAgent(ctx, c, id, attached, waitRemoved, p.o.debug)
	if waitRemoved != nil && ctx.Err() == nil {
		// The engine removed the container; its network is clawker's to
		// remove (the CP's janitor prunes it otherwise).
		_ = agentnet.Remove(context.WithoutCancel(ctx), c, anet.Name)
	}
	return err
}

// imageDefaults fills what the request left to the image (pulled if
// missing): the user command and the user it runs as (USER).
func (a *app) imageDefaults(ctx context.Context, c runDocker, p runPlan) ([]string, string, error) {
	img, err := a.imageForRun(ctx, c, p.image, p.o.pull)
	if err != nil {
		return nil, "", err
	}
	var imgEntrypoint, imgCmd []string
	var imgUser string
	if cfg := img.Config; cfg != nil {
		imgEntrypoint, imgCmd, imgUser = cfg.Entrypoint, cfg.Cmd, cfg.User
	}
	userCmd := userCommand(p.o.entrypoint, p.cmd, imgEntrypoint, imgCmd)
	if len(userCmd) == 0 {
		return nil, "", usageErrorf("image %s has no entrypoint or cmd: give the command to run after the image name", p.image)
	}
	runAs := p.eff.User.V
	if runAs == "" {
		runAs = imgUser
	}
	return userCmd, runAs, nil
}

// userCommand is the argv clawkerd starts. A given CMD replaces the
// image's ENTRYPOINT and CMD both (clawkerd is the container's entrypoint);
// --entrypoint replaces the image's ENTRYPOINT and drops its CMD, as
// docker run does, and "" clears it.
func userCommand(entrypoint *string, cmd, imgEntrypoint, imgCmd []string) []string {
	if entrypoint != nil {
		var out []string
		if *entrypoint != "" {
			out = []string{*entrypoint}
		}
		return append(out, cmd...)
	}
	if len(cmd) > 0 {
		return append([]string(nil), cmd...)
	}
	return append(append([]string{}, imgEntrypoint...), imgCmd...)
}
