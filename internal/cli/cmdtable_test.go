package cli

import (
	"bytes"
	"slices"
	"testing"

	"github.com/spf13/cobra"
)

// The table's names are the commands' own: a name that drifted would send
// a run to the whole-tree path (slower) or build the wrong command.
func TestCommandTableNamesMatchCommands(t *testing.T) {
	a := &app{}
	for _, c := range a.commandTable() {
		cmd := c.make()
		want := append([]string{cmd.Name()}, cmd.Aliases...)
		if !slices.Equal(c.names, want) {
			t.Errorf("table names %v, command says %v", c.names, want)
		}
	}
}

// A run that names its command builds only that one; what it prints for
// help (usage, flags, global flags) must be what the whole tree prints.
func TestSoleCommandHelpMatchesWholeTree(t *testing.T) {
	a := &app{}
	help := func(root *cobra.Command, args []string) string {
		var out bytes.Buffer
		root.SetArgs(args)
		root.SetOut(&out)
		root.SetErr(&out)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	for _, c := range a.commandTable() {
		for _, name := range c.names {
			args := []string{name, "--help"}
			sole := a.rootCmd(args)
			if got := len(sole.Commands()); c.wholeTree != (got > 1) {
				t.Fatalf("%s: %d commands built, wholeTree=%v", name, got, c.wholeTree)
			}
			if got, want := help(sole, args), help(a.rootCmd(nil), args); got != want {
				t.Errorf("%s --help differs when built alone:\n%s\nwhole tree:\n%s", name, got, want)
			}
		}
	}
	for _, args := range [][]string{nil, {"help"}, {"completion", "bash"}, {"--home", "/x", "exec"}, {"exe"}} {
		if got := len(a.rootCmd(args).Commands()); got < len(a.commandTable()) {
			t.Errorf("%v: %d commands built, want the whole tree", args, got)
		}
	}
}
