package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// genDocsCmd writes one Markdown reference page per command from the cobra
// tree (hidden: `make docs` runs it), so the reference never drifts from
// --help.
func (a *app) genDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write the command reference as Markdown into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			return writeDocs(cmd.Root(), dir)
		},
	}
}

func docName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "_") + ".md"
}

func writeDocs(c *cobra.Command, dir string) error {
	if c.Hidden || c.Name() == "help" || c.HasParent() && c.Parent().Name() == "completion" {
		return nil
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n%s\n\n", c.CommandPath(), c.Short)
	if c.Runnable() {
		fmt.Fprintf(&b, "```\n%s\n```\n\n", c.UseLine())
	}
	if c.Long != "" {
		fmt.Fprintf(&b, "%s\n\n", c.Long)
	}
	if c.Example != "" {
		fmt.Fprintf(&b, "## Examples\n\n```\n%s\n```\n\n", c.Example)
	}
	if flags := flagTable(c.NonInheritedFlags()); flags != "" {
		fmt.Fprintf(&b, "## Flags\n\n%s\n", flags)
	}
	if flags := flagTable(c.InheritedFlags()); flags != "" {
		fmt.Fprintf(&b, "## Global flags\n\n%s\n", flags)
	}
	var subs []*cobra.Command
	for _, s := range c.Commands() {
		if !s.Hidden && s.Name() != "help" && c.Name() != "completion" {
			subs = append(subs, s)
		}
	}
	if len(subs) > 0 {
		b.WriteString("## Commands\n\n")
		for _, s := range subs {
			fmt.Fprintf(&b, "- [%s](%s): %s\n", s.CommandPath(), docName(s), s.Short)
		}
		b.WriteString("\n")
	}
	if c.HasParent() {
		fmt.Fprintf(&b, "See also: [%s](%s)\n", c.Parent().CommandPath(), docName(c.Parent()))
	}
	if err := os.WriteFile(filepath.Join(dir, docName(c)), b.Bytes(), 0o644); err != nil {
		return err
	}
	for _, s := range subs {
		if err := writeDocs(s, dir); err != nil {
			return err
		}
	}
	return nil
}

func flagTable(fs *pflag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		name := "`--" + f.Name + "`"
		if f.Shorthand != "" {
			name = "`-" + f.Shorthand + "`, " + name
		}
		def := f.DefValue
		if def == "" || def == "[]" || def == "false" {
			def = ""
		} else {
			def = " (default `" + def + "`)"
		}
		fmt.Fprintf(&b, "| %s | %s%s |\n", name, strings.ReplaceAll(f.Usage, "|", "\\|"), def)
	})
	if b.Len() == 0 {
		return ""
	}
	return "| flag | description |\n|---|---|\n" + b.String()
}
