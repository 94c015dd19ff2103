package cli

import "github.com/spf13/cobra"

// subcommand is one top-level command: its name and aliases, known
// without building it, and its constructor.
type subcommand struct {
	names []string
	make  func() *cobra.Command
	// wholeTree: the command reads the rest of the tree (gen-docs walks
	// it), so it is never built alone.
	wholeTree bool
}

// commandTable is the top-level commands in help order.
func (a *app) commandTable() []subcommand {
	return []subcommand{
		{names: []string{"init"}, make: a.initCmd},
		{names: []string{"cp"}, make: a.cpCmd},
		{names: []string{"run"}, make: a.runCmd},
		{names: []string{"agents", "ls", "ps"}, make: a.agentsCmd},
		{names: []string{"events"}, make: a.eventsCmd},
		{names: []string{"exec"}, make: a.execCmd},
		{names: []string{"attach"}, make: a.attachCmd},
		{names: []string{"contain"}, make: a.containCmd},
		{names: []string{"egress"}, make: a.egressCmd},
		{names: []string{"rm"}, make: a.rmCmd},
		{names: []string{"stop"}, make: a.stopCmd},
		{names: []string{"start"}, make: a.startCmd},
		{names: []string{"restart"}, make: a.restartCmd},
		{names: []string{"logs"}, make: a.logsCmd},
		{names: []string{"config"}, make: a.configCmd},
		{names: []string{"state"}, make: a.stateCmd},
		{names: []string{"version"}, make: a.versionCmd},
		{names: []string{"gen-docs"}, make: a.genDocsCmd, wholeTree: true},
	}
}

// soleCommand returns the entry args name first, when that command alone
// can serve the run; nil means build the whole tree (help, completion,
// a root flag first, an unknown name that needs suggestions).
func soleCommand(table []subcommand, args []string) *subcommand {
	if len(args) == 0 {
		return nil
	}
	for i := range table {
		for _, n := range table[i].names {
			if n == args[0] && !table[i].wholeTree {
				return &table[i]
			}
		}
	}
	return nil
}
