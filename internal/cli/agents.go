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
	var lf listFlags
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"ls", "ps"},
		Short:   "List agents as the control plane sees them",
		Long: `agents lists the agents the control plane knows: its registry row
(registered identity) joined with the live worldview (Session state, init
progress, trust) and Docker's container state. As docker ps, only running
agents are listed unless -a is given; -a also lists agent containers the
control plane has no row for. When Docker cannot be asked, every agent the
control plane knows is listed, with state "-".`,
		Example: "  clawker agents\n  clawker agents -a --project web -o json\n  clawker agents -q\n  clawker agents --format '{{.Agent}} {{.State}} {{.Init}}'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := lf.check(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			ac, err := a.admin(ctx)
			if err != nil {
				return err
			}
			defer ac.Close()
			if watch {
				return a.watchAgents(ctx, ac, project, output, lf)
			}
			rctx, cancel := rpcTimeout(ctx)
			defer cancel()
			res, err := ac.ListAgents(rctx, &adminv1.ListAgentsRequest{Project: project})
			if err != nil {
				return rpcError("list agents", err)
			}
			return a.printAgents(ctx, res.GetAgents(), project, output, lf)
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVarP(&project, "project", "p", "", "only agents of this project")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "re-print the list whenever an agent changes, until Ctrl-C")
	addListFlags(cmd, &lf, "also list stopped agents, and agent containers the control plane has no row for", "print only container IDs")
	return cmd
}

func (a *app) printAgents(ctx context.Context, agents []*adminv1.Agent, project, output string, lf listFlags) error {
	agents, states := a.dockerStates(ctx, agents, project, lf.all)
	if lf.quiet {
		for _, ag := range agents {
			fmt.Fprintln(a.out, shortID(ag.GetContainerId()))
		}
		return nil
	}
	if output == "json" || lf.tmpl != nil {
		rows := agentsJSON(agents, states)
		if lf.tmpl != nil {
			return lf.each(a.out, len(rows), func(i int) any { return rows[i] })
		}
		return writeJSON(a.out, a.withLimits(ctx, rows))
	}
	tw := termSafeTable{tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)} // cells are agent-controlled
	fmt.Fprintln(tw, "AGENT	PROJECT	CONTAINER	REGISTERED	TRUSTED	SESSION	INIT	STATE")
	for _, ag := range agents {
		proj := ag.GetProject()
		if proj == "" {
			proj = "-"
		}
		_ = tw.Row(ag.GetAgent(), proj, shortID(ag.GetContainerId()),
			registeredCol(ag), adminv1.TrustSummary(ag), ag.GetSessionState(), initCol(ag), orDefault(states[ag.GetContainerId()], "-"))
	}
	return tw.Flush()
}

// watchAgents prints the list, then again after every change the CP
// reports (coalesced to at most a few re-prints a second).
func (a *app) watchAgents(ctx context.Context, ac *adminConn, project, output string, lf listFlags) error {
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
		if output == "table" && !lf.quiet && lf.tmpl == nil {
			fmt.Fprintf(a.out, "\n%s\n", a.now().Format("15:04:05"))
		}
		if err := a.printAgents(ctx, res.GetAgents(), project, output, lf); err != nil {
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

// registeredCol says whether the agent has a registry row; whether the
// live container proved to be that agent is the TRUSTED column's job.
func registeredCol(ag *adminv1.Agent) string {
	if !ag.GetRegistered() {
		return "no"
	}
	return "yes"
}

func initCol(ag *adminv1.Agent) string {
	switch ag.GetInitState() {
	case "running":
		return fmt.Sprintf("running %d/%d %s", ag.GetInitStepIndex(), ag.GetInitStepCount(), ag.GetInitStepName())
	case "failed":
		if r := ag.GetInitFailureReason(); r != "" {
			return fmt.Sprintf("failed: %s (%s)", ag.GetInitStepName(), r)
		}
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
	Trust            string    `json:"trust"` // the TRUSTED column: "yes" or "no (<reason>)"
	UntrustedReasons []string  `json:"untrusted_reasons,omitempty"`
	Init             string    `json:"init"`
	InitStep         string    `json:"init_step,omitempty"`
	InitStepIndex    int32     `json:"init_step_index"`
	InitStepCount    int32     `json:"init_step_count"`
	InitFailReason   string    `json:"init_failure_reason,omitempty"`
	LastError        string    `json:"last_error,omitempty"`
	Live             bool      `json:"live"`
	State            string    `json:"state"` // the container's, from Docker ("" when unknown)
	// Limits come from Docker (agentlimits.go); absent when it is unreachable.
	Limits *limitsJSON `json:"limits,omitempty"`
}

func agentsJSON(in []*adminv1.Agent, states map[string]string) []agentJSON {
	out := make([]agentJSON, 0, len(in))
	for _, ag := range in {
		j := agentJSON{
			Agent: ag.GetAgent(), Project: ag.GetProject(), ContainerID: ag.GetContainerId(),
			Registered: ag.GetRegistered(), Thumbprint: ag.GetThumbprint(),
			Session: ag.GetSessionState(), Attempts: ag.GetAttempts(), Trusted: adminv1.UntrustedBecause(ag) == "", Trust: adminv1.TrustSummary(ag),
			UntrustedReasons: ag.GetUntrustedReasons(), Init: ag.GetInitState(), InitStep: ag.GetInitStepName(),
			InitStepIndex: ag.GetInitStepIndex(), InitStepCount: ag.GetInitStepCount(),
			InitFailReason: ag.GetInitFailureReason(), LastError: ag.GetLastError(), Live: ag.GetLive(),
			State: states[ag.GetContainerId()],
		}
		if ns := ag.GetRegisteredAtUnixNano(); ns != 0 {
			j.RegisteredAt = time.Unix(0, ns).UTC()
		}
		out = append(out, j)
	}
	return out
}
