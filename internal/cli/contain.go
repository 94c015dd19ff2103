package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

var containActions = map[string]adminv1.ContainAction{
	"network-detach": adminv1.ContainAction_CONTAIN_ACTION_NETWORK_DETACH,
	"pause":          adminv1.ContainAction_CONTAIN_ACTION_PAUSE,
	"kill":           adminv1.ContainAction_CONTAIN_ACTION_KILL,
}

func (a *app) containCmd() *cobra.Command {
	var project, action, reason string
	cmd := &cobra.Command{
		Use:   "contain [flags] AGENT --action network-detach|pause|kill",
		Short: "Contain an agent: detach it from clawker-net, pause it, or kill it",
		Long: `contain acts on an agent container through the control plane, which logs
the action with your reason and publishes an agent_contained event.

  network-detach  disconnect the container from clawker-net (it keeps running)
  pause           freeze every process in the container
  kill            SIGKILL the container`,
		Example: `  clawker contain dev --action network-detach --reason "unexpected egress"
  clawker contain --project web reviewer --action kill`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			act, ok := containActions[action]
			if !ok {
				return usageErrorf("--action must be network-detach, pause or kill, not %q", action)
			}
			ref, err := agentRef(project, args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ac, err := a.admin(ctx)
			if err != nil {
				return err
			}
			defer ac.Close()
			rctx, cancel := rpcTimeout(ctx)
			defer cancel()
			res, err := ac.Contain(rctx, &adminv1.ContainRequest{Agent: ref, Action: act, Reason: reason})
			if err != nil {
				return rpcError("contain", err)
			}
			fmt.Fprintf(a.out, "%s: %s applied to %s\n", args[0], action, shortID(res.GetContainerId()))
			return nil
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agent's project")
	cmd.Flags().StringVar(&action, "action", "", "network-detach, pause or kill (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the control plane log and event)")
	_ = cmd.RegisterFlagCompletionFunc("action", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"network-detach", "pause", "kill"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}
