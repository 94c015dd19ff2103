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

func (a *app) rmCmd() *cobra.Command {
	var project string
	var force, state bool
	cmd := &cobra.Command{
		Use:   "rm [flags] AGENT [AGENT...]",
		Short: "Remove agent containers",
		Long: `rm removes agent containers. The control plane sees the container go and
evicts its registry row. A running agent is refused: clawker stop it
first, or give --force. The agent's kept state volumes (clawker.yaml
state:) stay unless --state is given.`,
		Example:           "  clawker rm dev\n  clawker rm --force --project web reviewer tester",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeAgents(nil),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, arg := range args {
				if _, _, err := agentIdentity(project, arg); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			return a.removeAgents(ctx, c, project, args, force, state)
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agents' project")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove running agents too")
	cmd.Flags().BoolVar(&state, "state", false, "also remove the agents' kept state volumes (default: keep them)")
	return cmd
}

func inProject(p string) string {
	if p == "" {
		return ""
	}
	return " in project " + p
}

// removeAgents removes each named agent's container and network (and its
// state with --state), refusing a running one without force.
func (a *app) removeAgents(ctx context.Context, c rmDocker, project string, names []string, force, state bool) error {
	var errs []error
	for _, arg := range names {
		ctrs, err := agentContainers(ctx, c, project, arg, false)
		if err != nil {
			return err
		}
		if len(ctrs) == 0 {
			errs = append(errs, withCode(ExitNotFound, fmt.Errorf("no agent %s%s: see clawker agents -a", arg, inProject(project))))
		}
		for _, ctr := range ctrs {
			if ctr.State == container.StateRunning && !force {
				errs = append(errs, withCode(ExitError, fmt.Errorf("agent %s is running: stop it first with clawker stop%s %s, or use --force", arg, projectFlag(project), arg)))
				continue
			}
			if _, err := c.ContainerRemove(ctx, ctr.ID, mobyclient.ContainerRemoveOptions{Force: force, RemoveVolumes: true}); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", arg, err))
				continue
			}
			if err := removeAgentNet(ctx, c, ctr.Labels); err != nil {
				fmt.Fprintf(a.errOut, "clawker: warning: %v (the control plane prunes it later)\n", err)
			}
			fmt.Fprintln(a.out, arg)
			if state {
				errs = append(errs, a.dropState(ctx, c, project, arg))
			}
		}
	}
	errs = slices.DeleteFunc(errs, func(e error) bool { return e == nil })
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// projectFlag is " --project p" for a message's suggested command.
func projectFlag(p string) string {
	if p == "" {
		return ""
	}
	return " --project " + p
}
