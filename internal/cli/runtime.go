package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
)

// Runtime is an agent runtime other than Docker, built into its own binary
// (clawker-kube) so that its client libraries cost clawker's Docker
// commands nothing. The commands that only talk to the CP (agents, events,
// exec, attach, contain, egress) are shared; the runtime supplies the rest.
type Runtime interface {
	// Name is what --runtime selects ("kubernetes").
	Name() string
	// AddFlags adds the runtime's root flags (--namespace, --context).
	AddFlags(*pflag.FlagSet)
	// AdminAddr returns a loopback address the CP's admin API answers on
	// for this command, and the func that releases it.
	AdminAddr(ctx context.Context) (addr string, release func(), err error)
	// Workloads lists the agent workloads of project ("" with anyProject:
	// all), for agents' State column and -a.
	Workloads(ctx context.Context, project string, anyProject bool) ([]Workload, error)
	// Exited reports whether workload id has exited (or is gone), and its
	// exit code: attach's answer when the Session ends first.
	Exited(ctx context.Context, id string) (code int, exited bool)
	// Commands are the runtime's own top-level commands (run, rm, cp);
	// they replace the Docker ones of the same names.
	Commands(Host) []*cobra.Command
}

// Workload is one agent workload as its runtime sees it. State uses
// docker's words: running, created (not started yet), exited.
type Workload struct {
	ID, Agent, Project, State string
}

// Host is what a runtime's commands use of the CLI.
type Host interface {
	Home() (auth.Home, error)
	Out() io.Writer
	ErrOut() io.Writer
	Now() time.Time
	// Terminal attaches to the terminal of agent id (its workload ID)
	// once the CP trusts it, as run -t does; exited, when set, reports
	// the workload's end so the wait stops early.
	Terminal(ctx context.Context, id string, interactive bool, detachKeys []byte, exited func(context.Context) (int, bool)) error
	// BinaryImage builds ref in the local Docker engine from the static
	// binary name (clawkerd or clawker-cp) alone.
	BinaryImage(ctx context.Context, ref, name string) error
}

// Exit-code errors for a runtime's commands.
func UsageError(err error) error       { return withCode(ExitUsage, err) }
func NotFoundError(err error) error    { return withCode(ExitNotFound, err) }
func UnavailableError(err error) error { return withCode(ExitUnavailable, err) }

// ExitStatus ends the process with code and no message: the agent's
// command has already written its own output.
func ExitStatus(code int) error {
	if code == 0 {
		return nil
	}
	return silentExit{code: code}
}

// ParseDetachKeys parses a docker-syntax --detach-keys value.
func ParseDetachKeys(spec string) ([]byte, error) { return parseDetachKeys(spec) }

// DefaultDetachKeys is docker's Ctrl-P Ctrl-Q.
const DefaultDetachKeys = defaultDetachKeys

// MainRuntime is Main for a binary built with rt. It refuses a
// --runtime (or $CLAWKER_RUNTIME) that names another runtime.
func MainRuntime(rt Runtime, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	name, _, err := runtimeArg(args)
	if err == nil && name != "" && runtimeBinaries[name] != runtimeBinaries[rt.Name()] {
		err = usageErrorf("this binary serves --runtime %s, not %q: use clawker for docker", rt.Name(), name)
	}
	if err != nil {
		fmt.Fprintf(stderr, "clawker: %v\n", err)
		return exitCode(err)
	}
	return mainWith(rt, args, stdin, stdout, stderr)
}

// EnvRuntime selects the runtime as --runtime does.
const EnvRuntime = "CLAWKER_RUNTIME"

// runtimeBinaries maps --runtime values to the binary that serves them.
var runtimeBinaries = map[string]string{"kubernetes": "clawker-kube", "k8s": "clawker-kube"}

// rootValueFlags are the root flags (of either binary) whose value is the
// next word: clawker -n agents --runtime kubernetes is still a root flag.
var rootValueFlags = map[string]bool{"--home": true, "-n": true, "--namespace": true, "--context": true, "--kubeconfig": true}

// runtimeArg finds --runtime in the root flags (before the command name),
// else $CLAWKER_RUNTIME, and returns it with args minus the flag.
func runtimeArg(args []string) (string, []string, error) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || !strings.HasPrefix(arg, "-") {
			break
		}
		if v, ok := strings.CutPrefix(arg, "--runtime="); ok {
			return v, slices.Delete(slices.Clone(args), i, i+1), nil
		}
		if arg == "--runtime" {
			if i+1 == len(args) {
				return "", nil, usageErrorf("flag needs an argument: --runtime")
			}
			return args[i+1], slices.Delete(slices.Clone(args), i, i+2), nil
		}
		if rootValueFlags[arg] {
			i++ // its value
		}
	}
	return os.Getenv(EnvRuntime), args, nil
}

// selectRuntime hands the run to the binary of a non-Docker --runtime,
// found like clawkerd (next to clawker, else $PATH), replacing this
// process; it returns only to report an error.
func selectRuntime(args []string) ([]string, error) {
	name, rest, err := runtimeArg(args)
	if err != nil || name == "" || name == "docker" {
		return rest, err
	}
	bin, ok := runtimeBinaries[name]
	if !ok {
		return nil, usageErrorf("unknown --runtime %q: docker or kubernetes", name)
	}
	path, err := findBinary(bin, "CLAWKER_KUBE_BIN")
	if err != nil {
		return nil, withCode(ExitUnavailable, fmt.Errorf("--runtime %s: %w", name, err))
	}
	// The chosen runtime is in the flag that was removed; the env keeps
	// it for a clawker the plugin might start in turn.
	env := append(os.Environ(), EnvRuntime+"="+name)
	err = syscall.Exec(path, append([]string{filepath.Base(path)}, rest...), env)
	return nil, fmt.Errorf("run %s: %w", path, err)
}

// hostApp is the Host a runtime's commands see.
type hostApp struct{ a *app }

func (h hostApp) Home() (auth.Home, error) { return h.a.home() }
func (h hostApp) Out() io.Writer           { return h.a.out }
func (h hostApp) ErrOut() io.Writer        { return h.a.errOut }
func (h hostApp) Now() time.Time           { return h.a.now() }
func (h hostApp) Terminal(ctx context.Context, id string, interactive bool, keys []byte, exited func(context.Context) (int, bool)) error {
	return h.a.runTerminal(ctx, polledEnd(exited), id, &adminv1.AgentRef{ContainerId: id}, interactive, keys)
}

// runtimeCommands is the command table for rt: its own commands replace
// the Docker ones of the same name, and the other Docker-only commands
// say they are not available rather than touch Docker.
func (a *app) runtimeCommands(table []subcommand) []subcommand {
	own := map[string]*cobra.Command{}
	for _, c := range a.rt.Commands(hostApp{a}) {
		own[c.Name()] = c
	}
	shared := map[string]bool{"init": true, "agents": true, "events": true, "exec": true, "attach": true,
		"contain": true, "egress": true, "version": true, "gen-docs": true}
	out := make([]subcommand, 0, len(table))
	for _, sc := range table {
		name := sc.names[0]
		switch {
		case own[name] != nil:
			c := own[name]
			sc.make = func() *cobra.Command { return c }
		case !shared[name]:
			sc.make = a.unsupported(sc.make)
		}
		out = append(out, sc)
	}
	return out
}

// unsupported keeps a Docker-only command's name and help, but running it
// says so.
func (a *app) unsupported(mk func() *cobra.Command) func() *cobra.Command {
	return func() *cobra.Command {
		c := mk()
		c.Hidden = true
		c.PreRunE, c.PersistentPreRunE = nil, nil
		c.DisableFlagParsing = true
		c.ResetFlags() // a local -n would clash with the runtime's --namespace
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			return usageErrorf("%s is not available on the %s runtime (see clawker --help)", cmd.CommandPath(), a.rt.Name())
		}
		for _, sub := range c.Commands() {
			c.RemoveCommand(sub)
		}
		return c
	}
}

// ParseEnv validates -e KEY=VALUE (or KEY, taken from this environment)
// as run does: CLAWKER_ variables are clawker's.
func ParseEnv(kvs []string) ([]string, error) { return parseEnv(kvs) }

// AgentIdentity validates a project and agent name as run does.
func AgentIdentity(project, agent string) (auth.ProjectSlug, auth.AgentName, error) {
	return agentIdentity(project, agent)
}

// ConsoleFilter drops clawkerd's own log lines from an agent's output;
// Flush writes a held partial line.
func ConsoleFilter(w io.Writer) interface {
	io.Writer
	Flush() error
} {
	return &consoleFilter{w: w}
}
