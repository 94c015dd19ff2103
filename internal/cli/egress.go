package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/egress/policy"
)

func (a *app) egressCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "egress",
		Short: "Egress policy: reload it, grant timed bypasses, read the audit log",
		Long: `Agents have no route out: the control plane's egress gateway (DNS and an
HTTP(S) proxy) is their only way to the internet, and it lets through only
what the project's egress: policy in clawker.yaml (plus the built-in
defaults, unless defaults: false) allows, attributing every decision to a
proven agent.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(a.egressReloadCmd(), a.egressAllowCmd(), a.egressLogCmd())
	return cmd
}

func (a *app) egressReloadCmd() *cobra.Command {
	var dir, project string
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Apply the project's egress: policy from clawker.yaml to its running agents",
		Long: `reload reads clawker.yaml in --project-dir and installs its egress: section
as the policy of --project. Running agents see it on their next DNS query,
connection or request; clawker run installs it too.`,
		Example: "  clawker egress reload --project web --project-dir ~/src/web",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if project != "" {
				if _, _, err := agentIdentity(project, "x"); err != nil {
					return err
				}
			}
			pol, err := loadEgress(dir)
			if err != nil {
				return err
			}
			res, err := a.pushEgress(cmd.Context(), project, pol)
			if err != nil {
				return rpcError("egress reload", err)
			}
			defaults := "on"
			if !res.GetDefaults() {
				defaults = "off"
			}
			fmt.Fprintf(a.out, "egress policy of %s: %d allow, %d deny, defaults %s\n", orDefault(project, "global agents"),
				res.GetAllowRules(), res.GetDenyRules(), defaults)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "project-dir", ".", "directory holding clawker.yaml")
	cmd.Flags().StringVarP(&project, "project", "p", "", "project whose agents the policy applies to (empty: global agents)")
	return cmd
}

// loadEgress reads the egress: section of dir/clawker.yaml (nil: none).
func loadEgress(dir string) (*policy.Policy, error) {
	p, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return nil, withCode(ExitUsage, err)
	}
	if p == nil {
		return nil, nil
	}
	return p.File.Egress, nil
}

// pushEgress sends a project's policy to the CP (nil: defaults only).
func (a *app) pushEgress(ctx context.Context, project string, pol *policy.Policy) (*adminv1.EgressReloadResponse, error) {
	var body []byte
	if pol != nil {
		var err error
		if body, err = yaml.Marshal(pol); err != nil {
			return nil, fmt.Errorf("encode egress policy: %w", err)
		}
	}
	ac, err := a.admin(ctx)
	if err != nil {
		return nil, err
	}
	defer ac.Close()
	rctx, cancel := rpcTimeout(ctx)
	defer cancel()
	return ac.EgressReload(rctx, &adminv1.EgressReloadRequest{Project: project, PolicyYaml: string(body)})
}

func (a *app) egressAllowCmd() *cobra.Command {
	var agent, project, reason string
	var dur time.Duration
	cmd := &cobra.Command{
		Use:   "allow --agent AGENT --for DURATION HOST[:PORT]",
		Short: "Grant one agent a timed egress bypass (expires by itself, audited)",
		Long: `allow lets one agent reach HOST (a name, *.domain, IP or CIDR; any port
unless :PORT is given) for --for, up to 24h, whatever the policy says
(deny rules still win). The grant and its expiry are egress_granted and
egress_grant_expired events.`,
		Example: "  clawker egress allow --agent dev --for 10m example.com:443 --reason 'fetch spec'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if agent == "" {
				return usageErrorf("--agent is required")
			}
			if dur <= 0 || dur > policy.MaxGrant || dur%time.Second != 0 {
				return usageErrorf("--for must be whole seconds in (0, %v], not %v", policy.MaxGrant, dur)
			}
			ref, err := agentRef(project, agent)
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
			res, err := ac.EgressAllow(rctx, &adminv1.EgressAllowRequest{Agent: ref, Target: args[0],
				Seconds: uint32(dur / time.Second), Reason: reason})
			if err != nil {
				return rpcError("egress allow", err)
			}
			fmt.Fprintf(a.out, "grant %d: %s may reach %s until %s\n", res.GetGrantId(), agent, args[0],
				time.Unix(0, res.GetExpiresUnixNano()).UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVarP(&agent, "agent", "a", "", "the agent (required)")
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agent's project")
	cmd.Flags().DurationVar(&dur, "for", 0, "how long the grant lasts, e.g. 10m (required, at most 24h)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit event)")
	return cmd
}

// egressEvents are the event names `egress log` shows.
var egressEvents = []string{"egress_allowed", "egress_denied", "egress_granted", "egress_grant_expired", "egress_policy_loaded"}

func (a *app) egressLogCmd() *cobra.Command {
	var follow bool
	var since time.Duration
	var agent, project, output string
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Show the per-request egress audit log",
		Long: `log prints the egress gateway's decisions (egress_allowed, egress_denied:
agent, project, stage, host, port, method and path where seen, the rule
that matched) and grant and policy changes. Without -f it prints those
buffered in the last --since; with -f it keeps streaming.`,
		Example: "  clawker egress log --agent dev -f\n  clawker egress log --since 5m -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			req := &adminv1.WatchEventsRequest{Agent: agent, Project: project, EventTypes: egressEvents}
			return a.watchEvents(cmd.Context(), "egress log", req, since, follow, output, listFlags{})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming live decisions")
	cmd.Flags().DurationVar(&since, "since", time.Hour, "replay buffered decisions this far back (0 = none)")
	cmd.Flags().StringVarP(&agent, "agent", "a", "", "only this agent")
	cmd.Flags().StringVarP(&project, "project", "p", "", "only this project")
	addOutputFlag(cmd, &output)
	return cmd
}
