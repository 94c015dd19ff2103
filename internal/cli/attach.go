package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// attachReadyTimeout bounds how long run -t waits for its new agent to be
// trusted (registered, Session up) before attaching.
const attachReadyTimeout = 3 * time.Minute

func (a *app) attachCmd() *cobra.Command {
	var project, keys string
	var noStdin bool
	cmd := &cobra.Command{
		Use:   "attach [flags] AGENT",
		Short: "Attach to an agent's command: its terminal, or its output",
		Long: `attach connects to the terminal of an agent started with clawker run -t, over
the control plane's Session: your terminal goes raw, keys and window
resizes reach the agent's command, and its screen comes back. Several
clients may be attached at once. The detach sequence (default Ctrl-P
Ctrl-Q, --detach-keys as docker) leaves the agent running; when the command
exits, attach exits with its code.

An agent started without -t has no terminal: attach then follows its
output (stdout and stderr) until it exits; Ctrl-C detaches.

As with exec, the control plane attaches only to an agent it trusts.`,
		Example: `  clawker attach dev
  clawker attach --project web --detach-keys ctrl-x reviewer`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := agentRef(project, args[0])
			if err != nil {
				return err
			}
			dk, err := parseDetachKeys(keys)
			if err != nil {
				return usageErrorf("--detach-keys: %v", err)
			}
			return a.attach(cmd.Context(), ref, !noStdin, dk)
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agent's project")
	cmd.Flags().StringVar(&keys, "detach-keys", defaultDetachKeys, "key sequence that detaches (docker syntax; empty: none)")
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "do not forward keys (watch only; Ctrl-C detaches)")
	return cmd
}

// attach attaches to the user CMD's terminal, or follows its output when
// it has none.
func (a *app) attach(ctx context.Context, ref *adminv1.AgentRef, interactive bool, keys []byte) error {
	eio := &execIO{interactive: interactive, detachKeys: keys}
	err := a.exec(ctx, &adminv1.ExecStart{Agent: ref, Attach: true, Tty: true}, eio)
	if err == nil || eio.containerID == "" || !strings.Contains(err.Error(), "has no terminal") {
		var ended workloadEnd = dockerEnd{a, eio.containerID}
		if a.rt != nil {
			id := eio.containerID
			ended = polledEnd(func(ctx context.Context) (int, bool) { return a.rt.Exited(ctx, id) })
		}
		return a.attachEnded(ctx, eio, ended, err)
	}
	if a.rt != nil {
		return usageErrorf("agent %s has no terminal: on the %s runtime follow its output with the runtime's own tools (kubectl logs -f)", shortID(eio.containerID), a.rt.Name())
	}
	c, derr := a.docker(ctx)
	if derr != nil {
		return derr
	}
	att, derr := c.ContainerAttach(ctx, eio.containerID, mobyclient.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if derr != nil {
		return fmt.Errorf("attach to %s: %w", shortID(eio.containerID), derr)
	}
	defer att.Close()
	return a.followAgent(ctx, c, eio.containerID, &att, nil, false)
}

// workloadEnd is how an agent's workload ends: a check for polls, and a
// wait for its exit code. Docker answers both; another runtime's check is
// polled for the wait.
type workloadEnd interface {
	exited(ctx context.Context) (code int, ok bool)
	wait(ctx context.Context) (code int, err error)
}

// polledEnd is a runtime's check; nil never reports an exit.
type polledEnd func(context.Context) (int, bool)

func (f polledEnd) exited(ctx context.Context) (int, bool) {
	if f == nil {
		return 0, false
	}
	return f(ctx)
}

func (f polledEnd) wait(ctx context.Context) (int, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if code, ok := f.exited(ctx); ok {
			return code, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
}

// containerWaiter is what containerEnd asks Docker.
type containerWaiter interface {
	containerInspector
	ContainerWait(ctx context.Context, containerID string, options mobyclient.ContainerWaitOptions) mobyclient.ContainerWaitResult
}

// containerEnd is workloadEnd for container id.
type containerEnd struct {
	c  containerWaiter
	id string
}

func (e containerEnd) exited(ctx context.Context) (int, bool) {
	in, err := e.c.ContainerInspect(ctx, e.id, mobyclient.ContainerInspectOptions{})
	if err != nil || in.Container.State == nil || in.Container.State.Running {
		return 0, false
	}
	return in.Container.State.ExitCode, true
}

func (e containerEnd) wait(ctx context.Context) (int, error) {
	w := e.c.ContainerWait(ctx, e.id, mobyclient.ContainerWaitOptions{})
	select {
	case res := <-w.Result:
		return int(res.StatusCode), nil
	case err := <-w.Error:
		return 0, err
	}
}

// dockerEnd is containerEnd through a Docker client made when first
// asked; Docker unreachable never reports an exit.
type dockerEnd struct {
	a  *app
	id string
}

func (e dockerEnd) exited(ctx context.Context) (int, bool) {
	c, err := e.a.docker(ctx)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	return containerEnd{c, e.id}.exited(ctx)
}

func (e dockerEnd) wait(ctx context.Context) (int, error) {
	c, err := e.a.docker(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return containerEnd{c, e.id}.wait(ctx)
}

// runTerminal is run -t's attached mode: once the new agent is trusted
// it attaches to the user CMD's terminal. When the agent exits the exit
// code is its workload's.
func (a *app) runTerminal(ctx context.Context, ended workloadEnd, id string, ref *adminv1.AgentRef, interactive bool, keys []byte) error {
	if err := a.awaitTrusted(ctx, ended, id); err != nil {
		return err
	}
	eio := &execIO{interactive: interactive, detachKeys: keys}
	err := a.exec(ctx, &adminv1.ExecStart{Agent: ref, Attach: true, Tty: true, WaitMillis: 30000}, eio)
	return a.attachEnded(ctx, eio, ended, err)
}

// attachEnded turns an attach's end into clawker's: nothing on detach,
// else the command's exit code.
func (a *app) attachEnded(ctx context.Context, eio *execIO, ended workloadEnd, err error) error {
	id := eio.containerID
	if eio.detached.Load() {
		// On a line of its own: the cursor is wherever the agent's
		// full-screen program left it.
		fmt.Fprintf(a.errOut, "\ndetached from %s (still running)\n", shortID(id))
		return nil
	}
	var exit silentExit
	if err == nil || errors.As(err, &exit) {
		return err // the attach's own end: the command's exit code
	}
	// The command's exit ends clawkerd and its Session, often before the
	// attach's exit code gets out: the workload's code is the answer.
	if id == "" {
		return err
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	code, werr := ended.wait(wctx)
	if werr != nil {
		return err
	}
	if code != 0 {
		return silentExit{code: code}
	}
	return nil
}

// awaitTrusted polls the control plane until agent id is trusted, or
// fails when its workload ends or the wait times out.
func (a *app) awaitTrusted(ctx context.Context, ended workloadEnd, id string) error {
	ac, err := a.admin(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	ctx, cancel := context.WithTimeout(ctx, attachReadyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := ac.ListAgents(ctx, &adminv1.ListAgentsRequest{})
		if err == nil {
			for _, ag := range res.GetAgents() {
				if ag.GetContainerId() == id && ag.GetTrusted() {
					return nil
				}
			}
		}
		if code, exited := ended.exited(ctx); exited {
			return fmt.Errorf("agent %s exited (code %d) before it could be attached", shortID(id), code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent %s was not trusted by the control plane within %s; nothing attached (clawker agents shows why)",
				shortID(id), attachReadyTimeout)
		case <-tick.C:
		}
	}
}
