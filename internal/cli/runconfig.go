package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/clawker/clawker/internal/config"
)

// configFlags are the run flags that clawker.yaml can also set; `config
// show` takes the same ones so it can show what a run would use.
type configFlags struct {
	dir       string
	user      string
	workdir   string
	env       []string
	envFile   []string
	volumes   []string
	state     []string
	cpus      float64
	memory    string
	pidsLimit int64
}

func addConfigFlags(fs *pflag.FlagSet, cf *configFlags) {
	fs.StringVar(&cf.dir, "project-dir", ".", "directory holding clawker.yaml")
	fs.StringVarP(&cf.user, "user", "u", "", "user the user command runs as (name or uid[:gid]; default: the image's USER)")
	fs.StringVarP(&cf.workdir, "workdir", "w", "", "working directory of the user command")
	fs.StringArrayVarP(&cf.env, "env", "e", nil, "environment variable KEY=VALUE for the user command (repeatable; KEY alone copies it from here)")
	fs.StringArrayVar(&cf.envFile, "env-file", nil, "read environment variables from a dotenv file (repeatable; -e wins)")
	fs.StringArrayVarP(&cf.volumes, "volume", "v", nil, "bind mount or named volume SRC:DST[:ro] (repeatable)")
	fs.StringArrayVar(&cf.state, "state", nil, "keep this path (~/.claude, /abs) in a volume across rm and run (repeatable)")
	fs.Float64Var(&cf.cpus, "cpus", 0, "CPU limit, e.g. 1.5 (default: unlimited)")
	fs.StringVar(&cf.memory, "memory", "", "memory limit, e.g. 512m or 2g (default: unlimited)")
	fs.Int64Var(&cf.pidsLimit, "pids-limit", 0, fmt.Sprintf("process limit, -1 unlimited (default %d)", config.DefaultPidsLimit))
}

// effectiveConfig merges clawker.yaml (if any) with the flags the user
// actually typed and the IMAGE [CMD...] arguments.
func effectiveConfig(fs *pflag.FlagSet, cf configFlags, args []string) (*config.Effective, string, error) {
	p, err := config.Load(filepath.Join(cf.dir, config.FileName))
	if err != nil {
		return nil, "", withCode(ExitUsage, err)
	}
	env, err := parseEnv(cf.env)
	if err != nil {
		return nil, "", err
	}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if err := config.CheckEnvKey(k); err != nil {
			return nil, "", usageErrorf("invalid --env %q: %v", kv, err)
		}
	}
	fl := config.Flags{Env: env, EnvFile: cf.envFile, Volumes: cf.volumes, State: cf.state}
	if len(args) > 0 {
		fl.Image = &args[0]
		fl.Cmd = args[1:]
	}
	if fs.Changed("user") {
		fl.User = &cf.user
	}
	if fs.Changed("workdir") {
		fl.Workdir = &cf.workdir
	}
	if fs.Changed("cpus") {
		fl.CPUs = &cf.cpus
	}
	if fs.Changed("memory") {
		fl.Memory = &cf.memory
	}
	if fs.Changed("pids-limit") {
		fl.PidsLimit = &cf.pidsLimit
	}
	eff, err := config.Merge(p, fl)
	if err != nil {
		return nil, "", usageErrorf("%v", err)
	}
	for _, v := range eff.Volumes {
		if r := reservedMount(strings.Split(v.V, ":")[1]); r != "" {
			return nil, "", usageErrorf("invalid volume %q (%s): it would cover %s, which clawker owns", v.V, v.From, r)
		}
	}
	for _, v := range eff.State {
		if r := reservedMount(v.V); strings.HasPrefix(v.V, "/") && r != "" {
			return nil, "", usageErrorf("invalid state path %q (%s): it would cover %s, which clawker owns", v.V, v.From, r)
		}
	}
	envs, err := eff.ResolveEnv(cf.dir)
	if err != nil {
		return nil, "", withCode(ExitUsage, err)
	}
	eff.Env = envs
	return eff, cf.dir, nil
}

// agentResources turns the effective limits into the container's cgroup
// settings. Pure, so the mapping is unit-tested without Docker.
func agentResources(eff *config.Effective) (container.Resources, error) {
	mem, err := config.MemoryBytes(eff.Memory.V)
	if err != nil {
		return container.Resources{}, usageErrorf("%v", err)
	}
	pids := eff.PidsLimit.V
	r := container.Resources{Memory: mem, NanoCPUs: int64(eff.CPUs.V * 1e9), PidsLimit: &pids}
	if mem > 0 {
		// No swap beyond the limit: a memory hog is OOM-killed, not paged.
		r.MemorySwap = mem
	}
	return r, nil
}

// secretsTmpfs is the tmpfs the init plan installs secrets on: root-only
// until the plan hands it to the agent's user.
func secretsTmpfs(eff *config.Effective) map[string]string {
	if len(eff.Secrets) == 0 {
		return nil
	}
	return map[string]string{secretsDir: "rw,noexec,nosuid,nodev,size=4m,mode=0700"}
}

// secretsDir is where secrets appear in the agent; the CP's secrets step
// (controlplane/agent) owns the same path.
const secretsDir = "/run/secrets"

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show or check a project's clawker.yaml",
	}
	var cf configFlags
	show := &cobra.Command{
		Use:   "show [flags] [IMAGE [CMD...]]",
		Short: "Print the effective run configuration and where each value came from",
		Long: `show merges clawker.yaml from --project-dir with the given run flags and
the defaults, as clawker run would, and prints each value with its source:
a flag, FILE:LINE, an env file, or default. Secret values are never printed.`,
		Example: "  clawker config show\n  clawker config show --memory 2g --project-dir ./web",
		RunE: func(cmd *cobra.Command, args []string) error {
			eff, _, err := effectiveConfig(cmd.Flags(), cf, args)
			if err != nil {
				return err
			}
			return eff.Show(a.out, eff.Env)
		},
	}
	show.Flags().SetInterspersed(false)
	addConfigFlags(show.Flags(), &cf)
	validate := &cobra.Command{
		Use:     "validate [FILE]",
		Short:   "Check a clawker.yaml (default ./clawker.yaml)",
		Long:    "validate parses FILE strictly: an unknown key, a wrong type or a bad value is an error naming its line.",
		Example: "  clawker config validate\n  clawker config validate web/clawker.yaml",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			path := config.FileName
			if len(args) == 1 {
				path = args[0]
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return withCode(ExitUsage, fmt.Errorf("read %s: %w", path, err))
			}
			if _, err := config.Parse(path, data); err != nil {
				return withCode(ExitUsage, err)
			}
			fmt.Fprintf(a.out, "%s: ok\n", path)
			return nil
		},
	}
	cmd.AddCommand(show, validate)
	return cmd
}
