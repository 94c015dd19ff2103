package cli

import (
	"context"
	"fmt"
	"slices"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// agentContainers lists agent containers (running or not) by their
// labels: of project, or of every project when anyProject, and of one
// agent when name is set.
func agentContainers(ctx context.Context, c containerLister, project, name string, anyProject bool) ([]container.Summary, error) {
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent)
	if name != "" {
		f = f.Add("label", consts.LabelAgent+"="+name)
	}
	res, err := c.ContainerList(ctx, mobyclient.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list agent containers: %w", err)
	}
	var out []container.Summary
	for _, ctr := range res.Items {
		if anyProject || ctr.Labels[consts.LabelProject] == project {
			out = append(out, ctr)
		}
	}
	return out, nil
}

// findAgent returns the container of agent name in project; none is
// ExitNotFound. Labels alone can be worn by any container, so only the
// one holding the agent's unique Docker name (clawker.<project>.<agent>,
// as clawker run made it) is taken.
func findAgent(ctx context.Context, c containerLister, project, name string) (container.Summary, error) {
	p, an, err := agentIdentity(project, name)
	if err != nil {
		return container.Summary{}, err
	}
	ctrs, err := agentContainers(ctx, c, project, name, false)
	if err != nil {
		return container.Summary{}, err
	}
	for _, ctr := range ctrs {
		if slices.Contains(ctr.Names, "/"+auth.AgentFullName(p, an)) {
			return ctr, nil
		}
	}
	return container.Summary{}, withCode(ExitNotFound, fmt.Errorf("no agent %s%s: see clawker agents -a", name, inProject(project)))
}

// completeAgents completes agent names of the command's --project from
// Docker's labels; keep filters by container state (nil: any).
func (a *app) completeAgents(keep func(container.ContainerState) bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		project, _ := cmd.Flags().GetString("project")
		if a.rt != nil {
			return a.runtimeAgentNames(cmd.Context(), project), cobra.ShellCompDirectiveNoFileComp
		}
		c, err := a.docker(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		defer c.Close()
		ctrs, err := agentContainers(cmd.Context(), c, project, "", false)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var names []string
		for _, ctr := range ctrs {
			if keep == nil || keep(ctr.State) {
				names = append(names, ctr.Labels[consts.LabelAgent])
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// runtimeAgentNames is completeAgents on a non-Docker runtime.
func (a *app) runtimeAgentNames(ctx context.Context, project string) []string {
	ws, err := a.rt.Workloads(ctx, project, false)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(ws))
	for _, w := range ws {
		names = append(names, w.Agent)
	}
	return names
}
