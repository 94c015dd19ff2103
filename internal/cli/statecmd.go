package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (a *app) stateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state",
		Short: "List or remove agents' kept state volumes",
		Long: `Paths named in clawker.yaml's state: (or run --state) live in one volume
per project, agent and path, labelled dev.clawker.purpose=state. They
survive clawker rm; clawker rm --state or clawker state rm drops them.`,
	}
	var project, output string
	var all bool
	var lf listFlags
	ls := &cobra.Command{
		Use:     "ls [AGENT]",
		Short:   "List state volumes",
		Example: "  clawker state ls\n  clawker state ls --project web dev -o json\n  clawker state ls -q\n  clawker state ls --format '{{.Agent}} {{.Path}}'",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := lf.check(output); err != nil {
				return err
			}
			agent := ""
			if len(args) == 1 {
				if _, _, err := agentIdentity(project, args[0]); err != nil {
					return err
				}
				agent = args[0]
			}
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			vols, err := listStateVolumes(ctx, c, project, agent, !cmd.Flags().Changed("project"))
			if err != nil {
				return err
			}
			switch {
			case lf.quiet:
				for _, v := range vols {
					fmt.Fprintln(a.out, v.Name)
				}
				return nil
			case lf.tmpl != nil:
				return lf.each(a.out, len(vols), func(i int) any { return vols[i] })
			}
			if output == "json" {
				if vols == nil {
					vols = []stateVolume{}
				}
				return writeJSON(a.out, vols)
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROJECT\tAGENT\tPATH\tVOLUME")
			for _, v := range vols {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", orDefault(v.Project, "-"), v.Agent, v.Path, v.Name)
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVarP(&project, "project", "p", "", "only this project (default: every project)")
	addListFlags(ls, &lf, "", "print only volume names")
	addOutputFlag(ls, &output)
	rm := &cobra.Command{
		Use:     "rm [flags] AGENT [AGENT...]",
		Short:   "Remove agents' state volumes",
		Example: "  clawker state rm dev\n  clawker state rm --project web reviewer",
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
			for _, arg := range args {
				vols, err := listStateVolumes(ctx, c, project, arg, false)
				if err != nil {
					return err
				}
				if len(vols) == 0 && !all {
					return withCode(ExitNotFound, fmt.Errorf("no state for agent %s%s: see clawker state ls", arg, inProject(project)))
				}
				if err := removeStateVolumes(ctx, c, vols); err != nil {
					return err
				}
				for _, v := range vols {
					fmt.Fprintln(a.out, v.Name)
				}
			}
			return nil
		},
	}
	rm.Flags().StringVarP(&project, "project", "p", "", "the agents' project")
	rm.Flags().BoolVar(&all, "missing-ok", false, "succeed when an agent has no state")
	cmd.AddCommand(ls, rm)
	return cmd
}

// dropState removes one agent's state volumes (rm --state).
func (a *app) dropState(ctx context.Context, c volumeListRemover, project, agent string) error {
	vols, err := listStateVolumes(ctx, c, project, agent, false)
	if err != nil {
		return err
	}
	return removeStateVolumes(ctx, c, vols)
}
