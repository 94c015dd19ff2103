package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) initCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the clawker home: CA, control plane cert, CLI cert, assertion signing key",
		Long: `init creates the CLI home ($CLAWKER_HOME, default $XDG_DATA_HOME/clawker)
holding the clawker CA, the control plane's cert, the CLI's admin cert and the
key that signs agent registration assertions. Private files are 0600.

It is idempotent: files that already exist are kept, so running it again
never invalidates agents that are already running.`,
		Example: "  clawker init\n  CLAWKER_HOME=/tmp/clawker clawker init",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := a.home()
			if err != nil {
				return err
			}
			res, err := h.Init(a.now())
			if err != nil {
				return fmt.Errorf("init %s: %w", h.Dir, err)
			}
			if len(res.Created) == 0 {
				fmt.Fprintf(a.out, "clawker home %s is already initialised\n", h.Dir)
				return nil
			}
			fmt.Fprintf(a.out, "initialised clawker home %s\n", h.Dir)
			for _, f := range res.Created {
				fmt.Fprintf(a.out, "  created %s\n", f)
			}
			fmt.Fprintln(a.out, "next: clawker cp up")
			return nil
		},
	}
}
