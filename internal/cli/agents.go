package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

func (a *app) agentsCmd() *cobra.Command {
	var output, project string
	var watch bool
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"ls", "ps"},
		Short:   "List agents as the control plane sees them",
		Long: `agents lists every agent the control plane knows: its registry row
(registered identity) joined with the live worldview (Session state, init
progress, trust).`,
		Example: "  clawker agents\n  clawker agents --project web -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			ac, err := a.admin(ctx)
			if err != nil {
				return err
			}
			defer ac.Close()
			if watch {
				return a.watchAgents(ctx, ac, project, output)
			}
			rctx, cancel := rpcTimeout(ctx)
			defer cancel()
			res, err := ac.ListAgents(rctx, &adminv1.ListAgentsRequest{Project: project})
			if err != nil {
				return rpcError("list agents", err)
			}
			return a.printAgents(res.GetAgents(), output)
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVarP(&project, "project", "p", "", "only agents of this project")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "re-print the list whenever an agent changes, until Ctrl-C")
	return cmd
}

func (a *app) printAgents(agents []*adminv1.Agent, output string) error {
	if output == "json" {
		return writeJSON(a.out, agentsJSON(agents))
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tPROJECT\tCONTAINER\tREGISTERED\tSESSION\tINIT")
	for _, ag := range agents {
		proj := ag.GetProject()
		if proj == "" {
			proj = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ag.GetAgent(), proj, shortID(ag.GetContainerId()),
			registeredCol(ag), ag.GetSessionState(), initCol(ag))
	}
	return tw.Flush()
}

// watchAgents prints the list, then again after every change the CP
// reports (coalesced to at most a few re-prints a second).
func (a *app) watchAgents(ctx context.Context, ac *adminConn, project, output string) error {
	stream, err := ac.WatchEvents(ctx, &adminv1.WatchEventsRequest{Project: project})
	if err != nil {
		return rpcError("watch agents", err)
	}
	changed := make(chan error, 1)
	go func() {
		for {
			_, err := stream.Recv()
			if err != nil {
				select { // an error must not be lost to a full channel
				case changed <- err:
				case <-ctx.Done():
				}
				return
			}
			select {
			case changed <- nil:
			default: // a re-print is already pending
			}
		}
	}()
	for {
		rctx, cancel := rpcTimeout(ctx)
		res, err := ac.ListAgents(rctx, &adminv1.ListAgentsRequest{Project: project})
		cancel()
		if err != nil {
			return rpcError("list agents", err)
		}
		if output == "table" {
			fmt.Fprintf(a.out, "\n%s\n", a.now().Format("15:04:05"))
		}
		if err := a.printAgents(res.GetAgents(), output); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-changed:
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return rpcError("watch agents", err)
			}
		}
		select { // coalesce bursts (one agent's start is ~15 events)
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func registeredCol(ag *adminv1.Agent) string {
	if !ag.GetRegistered() {
		return "no"
	}
	// Untrusted means the CP found something wrong; without a live Session
	// trust is simply not established, which is no accusation.
	switch {
	case len(ag.GetUntrustedReasons()) > 0:
		return "yes (untrusted)"
	case !ag.GetTrusted():
		return "yes (unverified)"
	}
	return "yes"
}

func initCol(ag *adminv1.Agent) string {
	switch ag.GetInitState() {
	case "running":
		return fmt.Sprintf("running %d/%d %s", ag.GetInitStepIndex(), ag.GetInitStepCount(), ag.GetInitStepName())
	case "failed":
		return "failed: " + ag.GetInitStepName()
	case "":
		return "none"
	}
	return ag.GetInitState()
}

// agentJSON is the stable --output json shape of one agent.
type agentJSON struct {
	Agent            string    `json:"agent"`
	Project          string    `json:"project"`
	ContainerID      string    `json:"container_id"`
	Registered       bool      `json:"registered"`
	Thumbprint       string    `json:"thumbprint,omitempty"`
	RegisteredAt     time.Time `json:"registered_at,omitzero"`
	Session          string    `json:"session"`
	Attempts         int32     `json:"attempts"`
	Trusted          bool      `json:"trusted"`
	UntrustedReasons []string  `json:"untrusted_reasons,omitempty"`
	Init             string    `json:"init"`
	InitStep         string    `json:"init_step,omitempty"`
	InitStepIndex    int32     `json:"init_step_index"`
	InitStepCount    int32     `json:"init_step_count"`
	LastError        string    `json:"last_error,omitempty"`
	Live             bool      `json:"live"`
}

func agentsJSON(in []*adminv1.Agent) []agentJSON {
	out := make([]agentJSON, 0, len(in))
	for _, ag := range in {
		j := agentJSON{
			Agent: ag.GetAgent(), Project: ag.GetProject(), ContainerID: ag.GetContainerId(),
			Registered: ag.GetRegistered(), Thumbprint: ag.GetThumbprint(),
			Session: ag.GetSessionState(), Attempts: ag.GetAttempts(), Trusted: ag.GetTrusted(),
			UntrustedReasons: ag.GetUntrustedReasons(), Init: ag.GetInitState(), InitStep: ag.GetInitStepName(),
			InitStepIndex: ag.GetInitStepIndex(), InitStepCount: ag.GetInitStepCount(),
			LastError: ag.GetLastError(), Live: ag.GetLive(),
		}
		if ns := ag.GetRegisteredAtUnixNano(); ns != 0 {
			j.RegisteredAt = time.Unix(0, ns).UTC()
		}
		out = append(out, j)
	}
	return out
}
