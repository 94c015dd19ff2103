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
	"egress-block":   adminv1.ContainAction_CONTAIN_ACTION_EGRESS_BLOCK,
	"egress-unblock": adminv1.ContainAction_CONTAIN_ACTION_EGRESS_UNBLOCK,
}

func (a *app) containCmd() *cobra.Command {
	var project, action, reason string
	cmd := &cobra.Command{
		Use:   "contain [flags] AGENT --action network-detach|pause|kill|egress-block|egress-unblock",
		Short: "Contain an agent: cut its egress, detach it from its network, pause it, or kill it",
		Long: `contain acts on an agent container through the control plane, which logs
the action with your reason and publishes an agent_contained event.

  network-detach  disconnect the container from its agent network (it keeps running)
  pause           freeze every process in the container
  kill            SIGKILL the container
  egress-block    the egress gateway denies everything the agent asks for;
                  its Session stays attached (until egress-unblock or a CP restart)
  egress-unblock  lift an egress-block`,
		Example: `  clawker contain dev --action network-detach --reason "unexpected egress"
  clawker contain --project web reviewer --action kill`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			act, ok := containActions[action]
			if !ok {
				return usageErrorf("--action must be network-detach, pause, kill, egress-block or egress-unblock, not %q", action)
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
	cmd.Flags().StringVar(&action, "action", "", "network-detach, pause, kill, egress-block or egress-unblock (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the control plane log and event)")
	_ = cmd.RegisterFlagCompletionFunc("action", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"network-detach", "pause", "kill", "egress-block", "egress-unblock"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}
