package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

// lifecycleOp is one of stop, start and restart applied to a container.
type lifecycleOp func(ctx context.Context, c lifecycleDocker, id string) error

// lifecycleCmd builds stop, start or restart: like docker's, each takes
// one or more agents, prints each name it handled, and goes on past a
// failure (exit 4 when an agent does not exist, else 1).
func (a *app) lifecycleCmd(use, short, long, example string, keep func(container.ContainerState) bool, op func(flags lifecycleFlags) lifecycleOp, timeouts bool) *cobra.Command {
	var f lifecycleFlags
	cmd := &cobra.Command{
		Use:               use + " [flags] AGENT [AGENT...]",
		Short:             short,
		Long:              long,
		Example:           example,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeAgents(keep),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, arg := range args {
				if _, _, err := agentIdentity(f.project, arg); err != nil {
					return err
				}
			}
			if timeouts && cmd.Flags().Changed("timeout") {
				f.timeout = &f.seconds
			}
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			return a.eachAgent(ctx, c, f.project, args, op(f))
		},
	}
	cmd.Flags().StringVarP(&f.project, "project", "p", "", "the agents' project")
	if timeouts {
		cmd.Flags().IntVarP(&f.seconds, "timeout", "t", 10, "seconds to wait for the agent to stop before killing it")
		cmd.Flags().StringVarP(&f.signal, "signal", "s", "", "signal to stop the agent with (default: the image's STOPSIGNAL, else SIGTERM)")
	}
	return cmd
}

type lifecycleFlags struct {
	project string
	seconds int
	timeout *int // nil: the container's or the engine's default
	signal  string
}

// eachAgent applies op to every named agent of project, printing each
// name on success as docker does.
func (a *app) eachAgent(ctx context.Context, c lifecycleDocker, project string, names []string, op lifecycleOp) error {
	var errs []error
	for _, name := range names {
		ctr, err := findAgent(ctx, c, project, name)
		if err == nil {
			err = op(ctx, c, ctr.ID)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(a.out, name)
	}
	errs = slices.DeleteFunc(errs, func(e error) bool { return e == nil })
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

func (a *app) stopCmd() *cobra.Command {
	return a.lifecycleCmd("stop", "Stop running agents",
		`stop stops agent containers as docker stop does: the signal, then SIGKILL
after --timeout. The control plane ends the agent's Session on purpose (no
session_broken) and keeps its registry row; clawker start brings it back.`,
		"  clawker stop dev\n  clawker stop --project web -t 30 reviewer tester",
		func(s container.ContainerState) bool { return s == container.StateRunning },
		func(f lifecycleFlags) lifecycleOp {
			return func(ctx context.Context, c lifecycleDocker, id string) error {
				if _, err := c.ContainerStop(ctx, id, mobyclient.ContainerStopOptions{Timeout: f.timeout, Signal: f.signal}); err != nil {
					return fmt.Errorf("stop %s: %w", shortID(id), err)
				}
				return nil
			}
		}, true)
}

func (a *app) startCmd() *cobra.Command {
	return a.lifecycleCmd("start", "Start stopped agents",
		`start starts stopped agent containers. The control plane re-dials the agent
and recognises it (no second registration); of the init plan only pre-run
and agent-ready run again, then clawkerd starts the user command anew.`,
		"  clawker start dev\n  clawker start --project web reviewer",
		func(s container.ContainerState) bool { return s != container.StateRunning },
		func(lifecycleFlags) lifecycleOp {
			return func(ctx context.Context, c lifecycleDocker, id string) error {
				if _, err := c.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err != nil {
					return fmt.Errorf("start %s: %w", shortID(id), err)
				}
				return nil
			}
		}, false)
}

func (a *app) restartCmd() *cobra.Command {
	return a.lifecycleCmd("restart", "Restart agents",
		`restart stops (as clawker stop) and starts (as clawker start) agent
containers; a stopped agent is just started.`,
		"  clawker restart dev\n  clawker restart --project web -t 5 reviewer",
		nil,
		func(f lifecycleFlags) lifecycleOp {
			return func(ctx context.Context, c lifecycleDocker, id string) error {
				if _, err := c.ContainerRestart(ctx, id, mobyclient.ContainerRestartOptions{Timeout: f.timeout, Signal: f.signal}); err != nil {
					return fmt.Errorf("restart %s: %w", shortID(id), err)
				}
				return nil
			}
		}, true)
}
