package cli

import (
	"errors"
	"fmt"
	"strconv"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/moby/moby/api/pkg/stdcopy"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/consts"
)

func (a *app) cpDownCmd() *cobra.Command {
	var volumes bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop and remove the control plane container",
		Long: `down removes the clawker-controlplane container. Agents keep running;
the registry (volume clawker-cp-data) is kept unless --volumes is given, so
the next cp up re-dials every agent without re-registering them.

While agent containers remain, the container that holds the CP's network
namespace (clawker-controlplane-net) is kept too: it stays on every agent
network, so the next cp up joins none of them. down removes it once no
agent container is left.`,
		Example: "  clawker cp down\n  clawker cp down --volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			if h, err := a.home(); err == nil {
				stopGitCredServer(h)
			}
			timeout := 10
			if _, err := c.ContainerStop(ctx, consts.ControlPlaneContainer, mobyclient.ContainerStopOptions{Timeout: &timeout}); err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsNotModified(err) {
				return fmt.Errorf("stop control plane: %w", err)
			}
			_, err = c.ContainerRemove(ctx, consts.ControlPlaneContainer, mobyclient.ContainerRemoveOptions{Force: true})
			switch {
			case cerrdefs.IsNotFound(err):
				fmt.Fprintln(a.out, "control plane is not running")
			case err != nil:
				return fmt.Errorf("remove control plane: %w", err)
			default:
				fmt.Fprintln(a.out, "control plane removed")
			}
			if removed, err := removeCPNetIfUnused(ctx, c); err != nil {
				return err
			} else if removed {
				fmt.Fprintf(a.out, "%s removed\n", consts.ControlPlaneNetContainer)
			}
			if volumes {
				if _, err := c.VolumeRemove(ctx, consts.ControlPlaneVolume, mobyclient.VolumeRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
					return fmt.Errorf("remove volume %s: %w", consts.ControlPlaneVolume, err)
				}
				fmt.Fprintf(a.out, "volume %s removed\n", consts.ControlPlaneVolume)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&volumes, "volumes", false, "also remove the registry volume "+consts.ControlPlaneVolume)
	return cmd
}

func (a *app) cpStatusCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the control plane container and its subsystems",
		Example: "  clawker cp status\n  clawker cp status --output json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			st := cpStatus{Container: consts.ControlPlaneContainer, State: "absent", NetContainer: consts.ControlPlaneNetContainer, NetState: "absent"}
			if res, err := c.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{}); err == nil && res.Container.State != nil {
				st.NetID, st.NetState = shortID(res.Container.ID), string(res.Container.State.Status)
			}
			res, err := c.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
			if err != nil && !cerrdefs.IsNotFound(err) {
				return fmt.Errorf("inspect %s: %w", consts.ControlPlaneContainer, err)
			}
			if err == nil {
				st.ID = shortID(res.Container.ID)
				if res.Container.State != nil {
					st.State = string(res.Container.State.Status)
				}
				st.AdminAddr, _ = publishedAddr(ctx, c, consts.PortAdmin)
				if addr, herr := healthAddr(ctx, c); herr == nil {
					st.HealthAddr = addr
					if hz, _, herr := getHealthz(ctx, addr); herr == nil {
						st.Health = &hz
					}
				}
			}
			if output == "json" {
				return writeJSON(a.out, st)
			}
			fmt.Fprintf(a.out, "container:  %s %s\n", st.Container, st.ID)
			fmt.Fprintf(a.out, "state:      %s\n", st.State)
			fmt.Fprintf(a.out, "network:    %s %s %s\n", st.NetContainer, st.NetID, st.NetState)
			if st.AdminAddr != "" {
				fmt.Fprintf(a.out, "admin:      %s\n", st.AdminAddr)
				fmt.Fprintf(a.out, "health:     http://%s/healthz  metrics: http://%s/metrics\n", st.HealthAddr, st.HealthAddr)
			}
			if st.Health != nil {
				fmt.Fprintf(a.out, "ready:      %s\n", strconv.FormatBool(st.Health.Ready))
				for _, k := range sortedKeys(st.Health.Subsystems) {
					fmt.Fprintf(a.out, "  %-14s %s\n", k, st.Health.Subsystems[k])
				}
			}
			if st.State == "absent" {
				return withCode(ExitUnavailable, errors.New("the control plane is not running: run clawker cp up"))
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

type cpStatus struct {
	Container string `json:"container"`
	ID        string `json:"id,omitempty"`
	State     string `json:"state"`
	// The holder of the CP's network namespace (and its published ports).
	NetContainer string   `json:"net_container"`
	NetID        string   `json:"net_id,omitempty"`
	NetState     string   `json:"net_state"`
	AdminAddr    string   `json:"admin_addr,omitempty"`
	HealthAddr   string   `json:"health_addr,omitempty"`
	Health       *healthz `json:"health,omitempty"`
}

func (a *app) cpLogsCmd() *cobra.Command {
	var follow bool
	var tail string
	cmd := &cobra.Command{
		Use:     "logs",
		Short:   "Print the control plane's structured log",
		Example: "  clawker cp logs\n  clawker cp logs -f --tail 20",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			rc, err := c.ContainerLogs(ctx, consts.ControlPlaneContainer, mobyclient.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow, Tail: tail})
			if err != nil {
				if cerrdefs.IsNotFound(err) {
					return withCode(ExitUnavailable, errors.New("the control plane container does not exist: run clawker cp up"))
				}
				return fmt.Errorf("control plane logs: %w", err)
			}
			defer rc.Close()
			if _, err := stdcopy.StdCopy(a.out, a.errOut, rc); err != nil && ctx.Err() == nil {
				return fmt.Errorf("read logs: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow log output")
	cmd.Flags().StringVar(&tail, "tail", "all", "number of lines to show from the end")
	return cmd
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
