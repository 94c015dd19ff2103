package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/moby/moby/api/pkg/stdcopy"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func (a *app) logsCmd() *cobra.Command {
	var project, tail string
	var follow, debug bool
	cmd := &cobra.Command{
		Use:   "logs [flags] AGENT",
		Short: "Print an agent's console (its user command's output)",
		Long: `logs prints what the agent's user command wrote to stdout and stderr, from
the container's log as docker logs does, across stops and starts. clawkerd's
own log lines are left out unless --debug is given.`,
		Example:           "  clawker logs dev\n  clawker logs -f --tail 20 --project web reviewer",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeAgents(nil),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, _, err := agentIdentity(project, args[0]); err != nil {
				return err
			}
			if tail != "all" {
				if n, err := strconv.Atoi(tail); err != nil || n < 0 {
					return usageErrorf("--tail must be a number of lines or all, not %q", tail)
				}
			}
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			return a.agentLogs(ctx, c, project, args[0], mobyclient.ContainerLogsOptions{
				ShowStdout: true, ShowStderr: true, Follow: follow, Tail: tail}, debug)
		},
	}
	cmd.Flags().StringVarP(&project, "project", "p", "", "the agent's project")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow log output")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "number of lines to show from the end")
	cmd.Flags().BoolVar(&debug, "debug", false, "also show clawkerd's own log lines")
	return cmd
}

// agentLogs copies the agent container's log to stdout and stderr.
// --tail counts clawkerd's lines too (the engine cuts before the filter).
func (a *app) agentLogs(ctx context.Context, c logsDocker, project, name string, opts mobyclient.ContainerLogsOptions, debug bool) error {
	ctr, err := findAgent(ctx, c, project, name)
	if err != nil {
		return err
	}
	ins, err := c.ContainerInspect(ctx, ctr.ID, mobyclient.ContainerInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect %s: %w", name, err)
	}
	rc, err := c.ContainerLogs(ctx, ctr.ID, opts)
	if err != nil {
		return fmt.Errorf("logs of %s: %w", name, err)
	}
	defer rc.Close()
	errW := io.Writer(a.errOut)
	f := &consoleFilter{w: a.errOut}
	if !debug {
		errW = f
	}
	defer f.Flush()
	// A TTY container's log is one raw stream, not stdcopy frames.
	if ins.Container.Config != nil && ins.Container.Config.Tty {
		_, err = io.Copy(a.out, rc)
	} else {
		_, err = stdcopy.StdCopy(a.out, errW, rc)
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("read logs of %s: %w", name, err)
	}
	return nil
}
