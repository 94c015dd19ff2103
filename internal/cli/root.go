package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/version"
)

// app is the state every command shares: I/O, the home directory flag and
// the Docker client factory (swappable in tests so name validation can be
// shown to happen before any Docker call).
type app struct {
	in     io.Reader
	out    io.Writer
	errOut io.Writer

	homeFlag  string
	newDocker func() (dockerAPI, error)
	now       func() time.Time
	// credServer starts the host git credential server for cp up; nil
	// means startGitCredServer (unit tests stub it: it spawns a process).
	credServer func(auth.Home) (string, error)

	// started is set once cobra has parsed flags and validated args: an
	// error before that is a usage error.
	started bool

	// rt is the agent runtime when it is not Docker (clawker-kube).
	rt Runtime
}

// Main runs the CLI with args (without the program name) and returns the
// process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	args, err := selectRuntime(args)
	if err != nil {
		fmt.Fprintf(stderr, "clawker: %v\n", err)
		return exitCode(err)
	}
	return mainWith(nil, args, stdin, stdout, stderr)
}

func mainWith(rt Runtime, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{in: stdin, out: stdout, errOut: stderr, newDocker: defaultDocker, now: time.Now, rt: rt}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.run(ctx, args)
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCmd(args)
	root.SetArgs(args)
	root.SetIn(a.in)
	root.SetOut(a.out)
	root.SetErr(a.errOut)
	err := root.ExecuteContext(ctx)
	if err != nil && !a.started {
		var e *exitError
		if !errors.As(err, &e) {
			err = withCode(ExitUsage, fmt.Errorf("%w (see clawker --help)", err))
		}
	}
	if err != nil {
		var s silentExit
		if !errors.As(err, &s) {
			fmt.Fprintf(a.errOut, "clawker: %s\n", termSafeLines(err.Error())) // may quote an agent (exec errors)
		}
	}
	return exitCode(err)
}

func (a *app) rootCmd(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "clawker",
		Short: "Run AI coding agents in Docker under a control plane that knows who is who",
		Long: `clawker runs coding agents in Docker containers under a control plane (CP)
that proves each container's identity, initialises it, and can always reach,
exec into, or contain it.

Quickstart:
  clawker init                      # create the CA and keys (once)
  clawker cp up                     # start the control plane container
  clawker run -d --agent dev busybox sleep 3600
  clawker agents                    # see it registered and initialised`,
		Example: `  clawker init && clawker cp up
  clawker run -d --project web --agent reviewer node:22 npm test
  clawker agents --watch
  clawker exec --project web reviewer -- git status
  clawker contain --project web reviewer --action pause --reason "review"`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(*cobra.Command, []string) {
			a.started = true
		},
	}
	root.PersistentFlags().StringVar(&a.homeFlag, "home", "", "clawker home directory (default $CLAWKER_HOME, else $XDG_DATA_HOME/clawker)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(ExitUsage, err) })
	table := a.commandTable()
	if a.rt != nil {
		// Accepted (and ignored) so that a script can say --runtime to
		// either binary.
		root.PersistentFlags().String("runtime", a.rt.Name(), "agent runtime: docker (clawker) or kubernetes (clawker-kube)")
		a.rt.AddFlags(root.PersistentFlags())
		table = a.runtimeCommands(table)
	}
	if c := soleCommand(table, args); c != nil {
		// Only what this run names: the rest of the tree (and the
		// completion command, which is not being asked for) would cost
		// every command its flag sets for nothing.
		root.CompletionOptions.DisableDefaultCmd = true
		root.AddCommand(c.make())
		return root
	}
	for _, c := range table {
		root.AddCommand(c.make())
	}
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Example = "  source <(clawker completion bash)\n  clawker completion zsh > \"${fpath[1]}/_clawker\""
		}
	}
	return root
}

// home resolves the CLI home from --home, $CLAWKER_HOME or XDG defaults,
// and refuses one whose owner or modes let another user read its keys or
// replace its files (auth.Home.CheckPerms).
func (a *app) home() (auth.Home, error) {
	if a.homeFlag != "" {
		return checkedHome(auth.Home{Dir: a.homeFlag})
	}
	d, err := auth.DefaultHomeDir()
	if err != nil {
		return auth.Home{}, err
	}
	return checkedHome(auth.Home{Dir: d})
}

func checkedHome(h auth.Home) (auth.Home, error) {
	if err := h.CheckPerms(adminAddrFile); err != nil {
		return auth.Home{}, err
	}
	return h, nil
}

// docker returns a client after checking the engine answers, so a missing
// engine is reported once, clearly, with the right exit code.
func (a *app) docker(ctx context.Context) (dockerAPI, error) {
	c, err := a.newDocker()
	if err != nil {
		return nil, withCode(ExitUnavailable, fmt.Errorf("cannot set up a client for the Docker engine (check DOCKER_HOST): %w", err))
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Ping(pctx, mobyclient.PingOptions{NegotiateAPIVersion: true}); err != nil {
		c.Close()
		return nil, withCode(ExitUnavailable, fmt.Errorf("cannot reach the Docker engine (is it running, and may you use its socket?): %w", err))
	}
	return c, nil
}

func defaultDocker() (dockerAPI, error) {
	return mobyclient.New(mobyclient.FromEnv)
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the clawker version",
		Example: "  clawker version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.out, "clawker %s\n", version.Version)
			return nil
		},
	}
}
