package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// Env overrides for reaching a CP that runs as a host process (dev mode)
// instead of the clawker-controlplane container.
const (
	EnvCPAdminAddr  = "CLAWKER_CP_ADMIN_ADDR"
	EnvCPHealthAddr = "CLAWKER_CP_HEALTH_ADDR"
)

func (a *app) cpCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cp",
		Short: "Manage the control plane container (up, down, status, logs, profile)",
		Long: `The control plane runs as the container clawker-controlplane on the
clawker-net network, from the image clawker-controlplane:local that clawker
imports from its own clawker-cp binary. Its admin API and health endpoint are
published on 127.0.0.1 only, on ports Docker picks.`,
		Example: `  clawker cp up
  clawker cp status -o json
  clawker cp logs -f
  clawker cp down`,
	}
	cmd.AddCommand(a.cpUpCmd(), a.cpDownCmd(), a.cpStatusCmd(), a.cpLogsCmd(), a.cpProfileCmd())
	return cmd
}

func (a *app) cpUpCmd() *cobra.Command {
	var wait time.Duration
	var recreate bool
	var policy string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the control plane (idempotent)",
		Long: `up imports the control plane image if its binary changed, creates the
clawker-net network and the clawker-cp-data volume if missing, copies the CP's
cert, the CA and the assertion public key into a fresh container, starts it,
and waits until /healthz reports ready.`,
		Example: "  clawker cp up\n  clawker cp up --recreate --wait 2m",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch policy {
			case "off", "log", "pause", "detach", "kill":
			default:
				return usageErrorf("--untrusted-policy must be off, log, pause, detach or kill, not %q", policy)
			}
			return a.cpUp(cmd.Context(), wait, recreate, policy)
		},
	}
	cmd.Flags().StringVar(&policy, "untrusted-policy", "log", "what the CP does to an agent whose identity turns out untrusted: off, log, pause, detach or kill")
	cmd.Flags().DurationVar(&wait, "wait", 60*time.Second, "how long to wait for the control plane to report ready (0 = don't wait)")
	cmd.Flags().BoolVar(&recreate, "recreate", false, "replace a running control plane container even if it is up to date")
	return cmd
}

func (a *app) cpUp(ctx context.Context, wait time.Duration, recreate bool, policy string) error {
	h, err := a.home()
	if err != nil {
		return err
	}
	files := []string{consts.CPCertFile, consts.CPKeyFile, consts.CACertFile, consts.SigningPubFile}
	for _, f := range files {
		if _, err := os.Stat(h.Path(f)); err != nil {
			return withCode(ExitUsage, fmt.Errorf("clawker home %s is not initialised (%s missing): run clawker init", h.Dir, f))
		}
	}
	bin, err := findBinary("clawker-cp", EnvCPBin)
	if err != nil {
		return err
	}
	keysSum, err := filesSHA256(h, files)
	if err != nil {
		return err
	}
	c, err := a.docker(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	imageID, err := ensureCPImage(ctx, c, bin)
	if err != nil {
		return err
	}
	if err := ensureNetwork(ctx, c); err != nil {
		return err
	}
	if err := ensureVolume(ctx, c, consts.ControlPlaneVolume); err != nil {
		return err
	}
	existing, err := c.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
	switch {
	case err == nil:
		st := existing.Container.State
		if !recreate && st != nil && st.Running && existing.Container.Image == imageID && sameEnv(existing.Container.Config, cpEnv(policy)) &&
			existing.Container.Config.Labels[labelCPKeys] == keysSum {
			fmt.Fprintf(a.out, "control plane %s is already running\n", consts.ControlPlaneContainer)
			return a.waitReady(ctx, c, wait)
		}
		if _, err := c.ContainerRemove(ctx, existing.Container.ID, mobyclient.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove old control plane container: %w", err)
		}
	case !cerrdefs.IsNotFound(err):
		return fmt.Errorf("inspect %s: %w", consts.ControlPlaneContainer, err)
	}

	id, err := createCPContainer(ctx, c, dockerSocketPath(c), cpEnv(policy), keysSum)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok { // nothing half-created: a container that never started goes
			_, _ = c.ContainerRemove(context.WithoutCancel(ctx), id, mobyclient.ContainerRemoveOptions{Force: true})
		}
	}()
	tb := newTarBuilder(a.now())
	if err := tb.dir(cpConfigDir[1:], 0o700); err != nil {
		return err
	}
	for _, f := range files {
		mode := int64(0o444)
		if f == consts.CPKeyFile {
			mode = 0o400
		}
		if err := tb.hostFile(cpConfigDir[1:]+"/"+f, mode, h.Path(f)); err != nil {
			return err
		}
	}
	data, err := tb.bytes()
	if err != nil {
		return err
	}
	if _, err := c.CopyToContainer(ctx, id, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: bytes.NewReader(data)}); err != nil {
		return fmt.Errorf("copy keys into the control plane container: %w", err)
	}
	if _, err := c.ContainerStart(ctx, id, mobyclient.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	ok = true
	pruneOldCPImages(ctx, c, imageID)
	fmt.Fprintf(a.out, "control plane %s started (%s)\n", consts.ControlPlaneContainer, shortID(id))
	return a.waitReady(ctx, c, wait)
}

// cpEnv is the CP container's environment: the daemon reads its
// configuration from CLAWKER_CP_* variables.
func cpEnv(policy string) []string {
	env := []string{"CLAWKER_CP_UNTRUSTED_POLICY=" + policy}
	if lvl := os.Getenv("CLAWKER_CP_LOG_LEVEL"); lvl != "" {
		env = append(env, "CLAWKER_CP_LOG_LEVEL="+lvl)
	}
	return env
}

// sameEnv reports whether a running CP was started with env, so `cp up`
// with other settings recreates it.
func sameEnv(cfg *container.Config, env []string) bool {
	if cfg == nil {
		return false
	}
	have := map[string]bool{}
	for _, e := range cfg.Env {
		have[e] = true
	}
	for _, e := range env {
		if !have[e] {
			return false
		}
	}
	return true
}

// labelCPKeys records the SHA-256 over the key files copied into the CP
// container, so `cp up` from another clawker home (another CA) replaces
// a CP that would refuse this CLI.
const labelCPKeys = "dev.clawker.cp-keys-sha256"

func filesSHA256(h auth.Home, names []string) (string, error) {
	sum := sha256.New()
	for _, n := range names {
		data, err := os.ReadFile(h.Path(n))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", n, err)
		}
		sum.Write(data)
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

func createCPContainer(ctx context.Context, c mobyclient.APIClient, sock string, env []string, keysSum string) (string, error) {
	loopback := netip.MustParseAddr("127.0.0.1")
	adminPort := network.MustParsePort(fmt.Sprintf("%d/tcp", consts.PortAdmin))
	healthPort := network.MustParsePort(fmt.Sprintf("%d/tcp", consts.PortHealth))
	res, err := c.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: consts.ControlPlaneContainer,
		Config: &container.Config{
			Image:        consts.ControlPlaneImage,
			Labels:       managedLabels(map[string]string{consts.LabelPurpose: consts.PurposeControlPlane, labelCPKeys: keysSum}),
			ExposedPorts: network.PortSet{adminPort: struct{}{}, healthPort: struct{}{}},
			Env:          env,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode(consts.NetworkName),
			// HostPort "" lets Docker pick a free port: two installs (or a
			// test next to a real install) never clash. The CLI finds the
			// port by inspecting the container.
			PortBindings: network.PortMap{
				adminPort:  {{HostIP: loopback, HostPort: ""}},
				healthPort: {{HostIP: loopback, HostPort: ""}},
			},
			Mounts: []mount.Mount{
				{Type: mount.TypeVolume, Source: consts.ControlPlaneVolume, Target: cpDataDir},
				{Type: mount.TypeBind, Source: sock, Target: "/var/run/docker.sock"},
			},
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			consts.NetworkName: {Aliases: []string{consts.ControlPlaneContainer}},
		}},
	})
	if err != nil {
		return "", fmt.Errorf("create control plane container: %w", err)
	}
	return res.ID, nil
}

// dockerSocketPath is the engine's unix socket on this host, mounted into
// the CP so it watches the same engine the CLI talks to.
func dockerSocketPath(c mobyclient.APIClient) string {
	if u, err := url.Parse(c.DaemonHost()); err == nil && u.Scheme == "unix" && u.Path != "" {
		return u.Path
	}
	return "/var/run/docker.sock"
}

// publishedAddr returns 127.0.0.1:<host port> of a CP container port.
func publishedAddr(ctx context.Context, c mobyclient.APIClient, port int) (string, error) {
	res, err := c.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", withCode(ExitUnavailable, errors.New("the control plane is not running: run clawker cp up"))
		}
		return "", fmt.Errorf("inspect %s: %w", consts.ControlPlaneContainer, err)
	}
	ctr := res.Container
	if ctr.State == nil || !ctr.State.Running {
		return "", withCode(ExitUnavailable, errors.New("the control plane container is not running: run clawker cp up (or clawker cp logs to see why it stopped)"))
	}
	if ctr.NetworkSettings != nil {
		p := network.MustParsePort(fmt.Sprintf("%d/tcp", port))
		for _, b := range ctr.NetworkSettings.Ports[p] {
			if b.HostPort != "" {
				return "127.0.0.1:" + b.HostPort, nil
			}
		}
	}
	return "", withCode(ExitUnavailable, fmt.Errorf("control plane port %d is not published: run clawker cp up --recreate", port))
}

// adminAddr asks Docker where the CP's admin port is published (dialCP
// has already tried the env override and the cached address).
func (a *app) adminAddr(ctx context.Context) (string, error) {
	c, err := a.docker(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return publishedAddr(ctx, c, consts.PortAdmin)
}

func healthAddr(ctx context.Context, c mobyclient.APIClient) (string, error) {
	if v := os.Getenv(EnvCPHealthAddr); v != "" {
		return v, nil
	}
	return publishedAddr(ctx, c, consts.PortHealth)
}

// healthz is the JSON /healthz returns.
type healthz struct {
	Ready      bool              `json:"ready"`
	Subsystems map[string]string `json:"subsystems"`
	Version    string            `json:"version,omitempty"`
}

func getHealthz(ctx context.Context, addr string) (healthz, int, error) {
	var hz healthz
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return hz, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return hz, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return hz, resp.StatusCode, err
	}
	if err := json.Unmarshal(body, &hz); err != nil {
		return hz, resp.StatusCode, fmt.Errorf("decode /healthz: %w", err)
	}
	return hz, resp.StatusCode, nil
}

// waitReady polls /healthz until it answers 200 or wait elapses.
func (a *app) waitReady(ctx context.Context, c mobyclient.APIClient, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	var last string
	for {
		addr, err := healthAddr(ctx, c)
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			hz, code, herr := getHealthz(rctx, addr)
			cancel()
			if herr == nil && code == http.StatusOK && hz.Ready {
				fmt.Fprintf(a.out, "control plane ready (admin on %s)\n", a.describeAdmin(ctx, c))
				return nil
			}
			if herr != nil {
				last = herr.Error()
			} else {
				last = fmt.Sprintf("HTTP %d %v", code, hz.Subsystems)
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return withCode(ExitUnavailable, fmt.Errorf("control plane not ready after %s (%s): see clawker cp logs", wait, last))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (a *app) describeAdmin(ctx context.Context, c mobyclient.APIClient) string {
	if v := os.Getenv(EnvCPAdminAddr); v != "" {
		return v
	}
	addr, err := publishedAddr(ctx, c, consts.PortAdmin)
	if err != nil {
		return "unknown"
	}
	return addr
}

func (a *app) cpDownCmd() *cobra.Command {
	var volumes bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop and remove the control plane container",
		Long: `down removes the clawker-controlplane container. Agents keep running;
the registry (volume clawker-cp-data) is kept unless --volumes is given, so
the next cp up re-dials every agent without re-registering them.`,
		Example: "  clawker cp down\n  clawker cp down --volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.docker(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
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
			st := cpStatus{Container: consts.ControlPlaneContainer, State: "absent"}
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
	Container  string   `json:"container"`
	ID         string   `json:"id,omitempty"`
	State      string   `json:"state"`
	AdminAddr  string   `json:"admin_addr,omitempty"`
	HealthAddr string   `json:"health_addr,omitempty"`
	Health     *healthz `json:"health,omitempty"`
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
