package cli

import (
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/consts"
)

// runTermFlags are run's terminal flags: -t runs the user CMD on a
// pseudo-terminal and attaches to it (runTerminal), -i forwards keys.
type runTermFlags struct {
	interactive, tty bool
	keySpec          string
	keys             []byte // parsed keySpec, set by check
}

func (f *runTermFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.interactive, "interactive", "i", false, "with -t: forward your keys to the agent's command")
	cmd.Flags().BoolVarP(&f.tty, "tty", "t", false, "run the agent's command on a pseudo-terminal and attach to it")
	cmd.Flags().StringVar(&f.keySpec, "detach-keys", defaultDetachKeys, "with -it: key sequence that detaches (docker syntax; empty: none)")
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if err := f.check(); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// check validates the combination. -i without -t would need the user
// CMD's stdin without a terminal, which clawker does not relay.
func (f *runTermFlags) check() error {
	if f.interactive && !f.tty {
		return usageErrorf("run -i needs -t (use -it): clawker relays an agent's stdin only through its terminal")
	}
	keys, err := parseDetachKeys(f.keySpec)
	if err != nil {
		return usageErrorf("--detach-keys: %v", err)
	}
	f.keys = keys
	return nil
}

// env is the container env entry that gives the user CMD its terminal.
func ttyEnv(tty bool) string {
	if tty {
		return consts.EnvTTY + "=1"
	}
	return consts.EnvTTY + "="
}
