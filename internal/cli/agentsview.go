package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/template"

	"github.com/moby/moby/api/types/container"
	"github.com/spf13/cobra"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/consts"
)

// listFlags are docker's list flags: -a, -q and --format.
type listFlags struct {
	all    bool
	quiet  bool
	format string
	tmpl   *template.Template // parsed --format
}

func addListFlags(cmd *cobra.Command, f *listFlags, allHelp, quietHelp string) {
	if allHelp != "" {
		cmd.Flags().BoolVarP(&f.all, "all", "a", false, allHelp)
	}
	if quietHelp != "" {
		cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, quietHelp)
	}
	cmd.Flags().StringVar(&f.format, "format", "", "print each item with a Go template over its JSON fields, e.g. '{{.Agent}} {{.State}}' ({{json .}} prints it as JSON)")
}

// check parses --format before anything is asked, so a bad template is a
// usage error.
func (f *listFlags) check(output string) error {
	if f.format == "" {
		return nil
	}
	if output != "table" {
		return usageErrorf("--format and --output %s are exclusive", output)
	}
	t, err := template.New("format").Funcs(template.FuncMap{"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	}}).Parse(f.format + "\n")
	if err != nil {
		return usageErrorf("invalid --format: %v", err)
	}
	f.tmpl = t
	return nil
}

// each prints every item through the --format template.
func (f *listFlags) each(w io.Writer, n int, item func(i int) any) error {
	for i := range n {
		if err := f.tmpl.Execute(termSafeWriter{w}, item(i)); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
	}
	return nil
}

// termSafeWriter strips terminal controls from template output, whose
// fields (agent names, errors) an agent may control.
type termSafeWriter struct{ w io.Writer }

func (t termSafeWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(t.w, termSafeLines(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// agentStates joins the CP's agents with Docker's view of their
// containers: the state of each (by container ID) and, with all, the
// agent containers the CP lists no row for (never registered, or made
// while it was down). ok is false when Docker cannot be asked: then
// nothing is filtered.
func agentStates(ctx context.Context, c containerLister, agents []*adminv1.Agent, project string, all bool) ([]*adminv1.Agent, map[string]string, error) {
	ctrs, err := agentContainers(ctx, c, project, "", project == "")
	if err != nil {
		return agents, nil, err
	}
	ws := make([]Workload, 0, len(ctrs))
	for _, ctr := range ctrs {
		ws = append(ws, Workload{ID: ctr.ID, Agent: ctr.Labels[consts.LabelAgent], Project: ctr.Labels[consts.LabelProject], State: string(ctr.State)})
	}
	out, states := joinWorkloads(agents, ws, all)
	return out, states, nil
}

// joinWorkloads is agentStates for any runtime's workloads.
func joinWorkloads(agents []*adminv1.Agent, ws []Workload, all bool) ([]*adminv1.Agent, map[string]string) {
	states := map[string]string{}
	for _, w := range ws {
		states[w.ID] = w.State
	}
	var out []*adminv1.Agent
	known := map[string]bool{}
	for _, ag := range agents {
		known[ag.GetContainerId()] = true
		if all || states[ag.GetContainerId()] == string(container.StateRunning) {
			out = append(out, ag)
		}
	}
	if !all {
		return out, states
	}
	for _, w := range ws {
		if !known[w.ID] {
			out = append(out, &adminv1.Agent{ContainerId: w.ID, Agent: w.Agent, Project: w.Project,
				SessionState: "none", InitState: "none"})
		}
	}
	return out, states
}

// dockerStates is agentStates through a fresh Docker client; Docker
// unreachable leaves the CP's list as it is, with no states.
func (a *app) dockerStates(ctx context.Context, agents []*adminv1.Agent, project string, all bool) ([]*adminv1.Agent, map[string]string) {
	if a.rt != nil {
		ws, err := a.rt.Workloads(ctx, project, project == "")
		if err != nil {
			return agents, nil
		}
		return joinWorkloads(agents, ws, all)
	}
	c, err := a.docker(ctx)
	if err != nil {
		return agents, nil
	}
	defer c.Close()
	out, states, err := agentStates(ctx, c, agents, project, all)
	if err != nil {
		return agents, nil
	}
	return out, states
}
