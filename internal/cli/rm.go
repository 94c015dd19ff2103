package cli

import (
	"errors"
	"fmt"

	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/consts"
)

func (a *app) rmCmd() *cobra.Command {
	var project string
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [flags] AGENT [AGENT...]",
		Short: "Remove agent containers",
		Long: `rm removes agent containers. The control plane sees the container go and
evicts its registry row; a running agent needs --force.`,
		Example: "  clawker rm dev\n  clawker rm --force --project web reviewer tester",
		Args:    cobra.MinimumNArgs(1),
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
			var errs []error
			for _, arg := range args {
				f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent, consts.LabelAgent+"="+arg)
				res, err := c.ContainerList(ctx, mobyclient.ContainerListOptions{All: true, Filters: f})
				if err != nil {
					return fmt.Errorf("list agent containers: %w", err)
				}
				found := false
				for _, ctr := range res.Items {
					if ctr.Labels[consts.LabelProject] != project {
						continue
					}
					found = true
					if ctr.State == "running" && !force {
						errs = append(errs, withCode(ExitError, fmt.Errorf("agent %s is running: stop it first or use --force", arg)))
						continue
					}
					if _, err := c.ContainerRemove(ctx, ctr.ID, mobyclient.ContainerRemoveOptions{Force: force, RemoveVolumes: true}); err != nil {
						errs = append(errs, fmt.Errorf("remove %s: %w", arg, err))
						continue
					}
					fmt.Fprintln(a.out, arg)
				}
				if !found {
					errs = append(errs, withCode(ExitNotFound, fmt.Errorf("no agent %s%s: see clawker agents", arg, inProject(project))))
				}
			}
			if len(errs) == 1 {
				return errs[0]
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agents' project")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove running agents too")
	return cmd
}

func inProject(p string) string {
	if p == "" {
		return ""
	}
	return " in project " + p
}
