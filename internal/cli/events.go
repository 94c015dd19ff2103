package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// replayIdle ends a non-follow `events`: once buffered events stop
// arriving for this long, the replay is over.
const replayIdle = 500 * time.Millisecond

func (a *app) eventsCmd() *cobra.Command {
	var follow bool
	var since time.Duration
	var agent, project, output string
	var types []string
	var lf listFlags
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show control plane events (Sessions, registration, init, containment)",
		Long: `events prints the control plane's typed events: session_connecting,
session_connected, agent_registered, agent_untrusted, init_started,
init_step_started/completed/failed, init_completed, agent_contained,
agent_oom_killed (reason oom: the agent hit its memory limit),
egress_allowed / egress_denied (every egress gateway decision; see clawker
egress log), ...

Without -f it prints the events buffered in the last --since and exits; with
-f it keeps streaming live events until Ctrl-C.`,
		Example: `  clawker events --since 10m
  clawker events -f --agent dev
  clawker events -f --type agent_registered --type init_completed -o json
  clawker events --format '{{.Name}} {{.Agent}} {{index .Fields "Reason"}}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := lf.check(output); err != nil {
				return err
			}
			req := &adminv1.WatchEventsRequest{Agent: agent, Project: project, EventTypes: types}
			return a.watchEvents(cmd.Context(), "events", req, since, follow, output, lf)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming live events")
	cmd.Flags().DurationVar(&since, "since", time.Hour, "replay buffered events this far back (0 = none)")
	cmd.Flags().StringVarP(&agent, "agent", "a", "", "only this agent")
	cmd.Flags().StringVarP(&project, "project", "p", "", "only this project")
	cmd.Flags().StringArrayVarP(&types, "type", "t", nil, "only these event names (repeatable)")
	addOutputFlag(cmd, &output)
	addListFlags(cmd, &lf, "", "")
	return cmd
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

type eventStream interface {
	Recv() (*adminv1.WatchEventsResponse, error)
}

func (a *app) printEvents(ctx context.Context, cancel context.CancelFunc, stream eventStream, follow bool, output string, lf listFlags) error {
	type item struct {
		res *adminv1.WatchEventsResponse
		err error
	}
	ch := make(chan item)
	go func() {
		for {
			res, err := stream.Recv()
			select {
			case ch <- item{res, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var idle <-chan time.Time
	for {
		if !follow {
			idle = time.After(replayIdle)
		}
		select {
		case <-idle:
			cancel()
			return nil
		case <-ctx.Done():
			return nil
		case it := <-ch:
			if it.err != nil {
				if errors.Is(it.err, io.EOF) || ctx.Err() != nil {
					return nil
				}
				return rpcError("events", it.err)
			}
			if ev := it.res.GetEvent(); ev != nil {
				if err := a.printEventAs(ev, output, lf); err != nil {
					return err
				}
			}
		}
	}
}

// eventJSON is one event as -o json prints it and --format sees it.
type eventJSON struct {
	Time        time.Time         `json:"time"`
	Name        string            `json:"name"`
	Agent       string            `json:"agent,omitempty"`
	Project     string            `json:"project,omitempty"`
	ContainerID string            `json:"container_id,omitempty"`
	Fields      map[string]string `json:"fields,omitempty"`
}

func (a *app) printEvent(ev *adminv1.Event, output string) error {
	return a.printEventAs(ev, output, listFlags{})
}

// printEventAs prints one event as a table row, JSON or --format.
func (a *app) printEventAs(ev *adminv1.Event, output string, lf listFlags) error {
	at := time.Unix(0, ev.GetAtUnixNano()).UTC()
	j := eventJSON{at, ev.GetName(), ev.GetAgent(), ev.GetProject(), ev.GetContainerId(), ev.GetFields()}
	if lf.tmpl != nil {
		return lf.each(a.out, 1, func(int) any { return j })
	}
	if output == "json" {
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(a.out, string(jsonTermSafe(b)))
		return err
	}
	who := ev.GetAgent()
	if ev.GetProject() != "" {
		who = ev.GetProject() + "/" + who
	}
	var kv []string
	keys := make([]string, 0, len(ev.GetFields()))
	for k := range ev.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := ev.GetFields()[k]; v != "" {
			kv = append(kv, termSafe(k)+"="+termSafe(v))
		}
	}
	_, err := fmt.Fprintf(a.out, "%s  %-20s %-16s %s  %s\n", at.Format("15:04:05.000"), termSafe(ev.GetName()), termSafe(who),
		termSafe(shortID(ev.GetContainerId())), strings.Join(kv, " "))
	return err
}

// watchEvents streams req's events (events, egress log): the agent filter
// is validated, --since becomes the replay start, and printEvents prints.
func (a *app) watchEvents(ctx context.Context, what string, req *adminv1.WatchEventsRequest, since time.Duration, follow bool, output string, lf listFlags) error {
	if req.GetAgent() != "" || req.GetProject() != "" {
		if _, _, err := agentIdentity(req.GetProject(), orDefault(req.GetAgent(), "x")); err != nil {
			return err
		}
	}
	ac, err := a.admin(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	if since > 0 {
		req.SinceUnixNano = a.now().Add(-since).UnixNano()
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ac.WatchEvents(sctx, req)
	if err != nil {
		return rpcError(what, err)
	}
	return a.printEvents(sctx, cancel, stream, follow, output, lf)
}
