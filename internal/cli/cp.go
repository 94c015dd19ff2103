package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
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
	// EnvCPEgressUpstreamDNS ("ip:port") is passed to the CP container:
	// its egress gateway's upstream resolver (tests: a fake internet's zone).
	EnvCPEgressUpstreamDNS = "CLAWKER_CP_EGRESS_UPSTREAM_DNS"
	// EnvCPEgressUpstreamCA (PEM) is passed to the CP container too: extra
	// roots its gateway trusts for intercepted upstreams (tests: the fake
	// internet's CA).
	EnvCPEgressUpstreamCA = "CLAWKER_CP_EGRESS_UPSTREAM_CA"
)

func (a *app) cpCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cp",
		Short: "Manage the control plane container (up, down, status, logs, profile)",
		Long: `The control plane runs as the container clawker-controlplane, from the
image clawker-controlplane:local that clawker imports from its own clawker-cp
binary, in the network namespace of the container clawker-controlplane-net:
that one is on the clawker-net network and every agent's own network, and
publishes the admin API and health endpoint on 127.0.0.1 only, on ports
Docker picks. Replacing the CP keeps the namespace, so it rejoins nothing.`,
		Example: `  clawker cp up
  clawker cp status -o json
  clawker cp logs -f
  clawker cp down`,
	}
	cmd.AddCommand(a.cpUpCmd(), a.cpDownCmd(), a.cpStatusCmd(), a.cpLogsCmd(), a.cpProfileCmd(), a.cpCredServerCmd())
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
clawker-net network and the clawker-cp-data volume if missing (a clawker-net
that clawker did not create is refused), starts the network holder
clawker-controlplane-net if it is not running (and attaches it at the CP's
pinned address to every agent's own network), copies the CP's cert, the CA
and the assertion public key into a fresh CP container in the holder's
namespace, starts it, and waits until /healthz reports ready. A CP that is
up to date and in the running holder's namespace is kept.`,
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
	cmd.Flags().BoolVar(&recreate, "recreate", false, "replace the running control plane and the container holding its network, even if up to date (the new one then rejoins every agent network)")
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
	if err := EnsureEgressCA(h); err != nil {
		return err
	}
	files = append(files, consts.EgressCAFile, consts.EgressCAKeyFile)
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
	return a.cpUpWith(ctx, c, cpUpPlan{home: h, files: files, bin: bin, keysSum: keysSum, wait: wait, recreate: recreate, policy: policy})
}

// cpUpPlan is a checked cp up request: the key files exist, the binary
// was found.
type cpUpPlan struct {
	home     auth.Home
	files    []string // key files copied into the CP container
	bin      string   // clawker-cp
	keysSum  string
	wait     time.Duration
	recreate bool
	policy   string
}

// cpUpWith makes the CP container current: kept when it runs the same
// image, settings and keys (unless recreate), else replaced.
func (a *app) cpUpWith(ctx context.Context, c cpDocker, p cpUpPlan) error {
	h, files, keysSum, wait, recreate, policy := p.home, p.files, p.keysSum, p.wait, p.recreate, p.policy
	imageID, err := ensureCPImage(ctx, c, p.bin)
	if err != nil {
		return err
	}
	if err := ensureNetwork(ctx, c); err != nil {
		return err
	}
	if err := ensureVolume(ctx, c, consts.ControlPlaneVolume); err != nil {
		return err
	}
	credMounts, credEnv := a.credSources(ctx, c, h)
	env := append(cpEnv(policy), credEnv...)
	holder, err := runningCPNet(ctx, c)
	if err != nil {
		return err
	}
	existing, err := c.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
	switch {
	case err == nil:
		st := existing.Container.State
		if !recreate && st != nil && st.Running && existing.Container.Image == imageID && sameEnv(existing.Container.Config, env) &&
			existing.Container.Config.Labels[labelCPKeys] == keysSum && holder.keeps(existing.Container) {
			fmt.Fprintf(a.out, "control plane %s is already running\n", consts.ControlPlaneContainer)
			if err := connectCPToAgentNets(ctx, c, holder.id, a.warnf); err != nil {
				return err
			}
			return a.waitReady(ctx, c, wait)
		}
		if _, err := c.ContainerRemove(ctx, existing.Container.ID, mobyclient.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove old control plane container: %w", err)
		}
	case !cerrdefs.IsNotFound(err):
		return fmt.Errorf("inspect %s: %w", consts.ControlPlaneContainer, err)
	}

	// After the old CP is gone: one from before the holder existed owned
	// the CP's address on every agent network.
	if recreate {
		if _, err := removeCPNet(ctx, c); err != nil {
			return err
		}
	}
	holderID, err := ensureCPNet(ctx, c)
	if err != nil {
		return err
	}
	id, err := createCPContainer(ctx, c, holderID, dockerSocketPath(c), env, credMounts, keysSum)
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
		if f == consts.CPKeyFile || f == consts.EgressCAKeyFile {
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
	// A holder kept from an earlier CP is on every agent network already:
	// this joins only what it missed. The CP's janitor reattaches the rest.
	if err := connectCPToAgentNets(ctx, c, holderID, a.warnf); err != nil {
		a.warnf(err)
	}
	pruneOldCPImages(ctx, c, imageID)
	fmt.Fprintf(a.out, "control plane %s started (%s)\n", consts.ControlPlaneContainer, shortID(id))
	return a.waitReady(ctx, c, wait)
}

// cpEnv is the CP container's environment: the daemon reads its
// configuration from CLAWKER_CP_* variables.
func cpEnv(policy string) []string {
	env := []string{"CLAWKER_CP_UNTRUSTED_POLICY=" + policy}
	pass := PassedCPEnv()
	for _, k := range slices.Sorted(maps.Keys(pass)) {
		env = append(env, k+"="+pass[k])
	}
	return env
}

// PassedCPEnv is the caller's CLAWKER_CP_* settings that cp up hands to
// the CP on either runtime: its log level and the egress upstreams.
func PassedCPEnv() map[string]string {
	env := map[string]string{}
	for _, k := range []string{"CLAWKER_CP_LOG_LEVEL", EnvCPEgressUpstreamDNS, EnvCPEgressUpstreamCA} {
		if v := os.Getenv(k); v != "" {
			env[k] = v
		}
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

// cpLogConfig bounds the CP container's Docker log: refusal lines are
// throttled in the CP, and rotation caps what is left at 3 × 10 MiB, so no
// peer can fill the host disk through it.
var cpLogConfig = container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}}

// createCPContainer makes the CP container in the holder's network
// namespace: it has no endpoint or published port of its own.
func createCPContainer(ctx context.Context, c containerCreator, holderID, sock string, env []string, extra []mount.Mount, keysSum string) (string, error) {
	res, err := c.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: consts.ControlPlaneContainer,
		Config: &container.Config{
			Image:  consts.ControlPlaneImage,
			Labels: managedLabels(map[string]string{consts.LabelPurpose: consts.PurposeControlPlane, labelCPKeys: keysSum}),
			Env:    env,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: cpNetMode(holderID),
			Mounts: append([]mount.Mount{
				{Type: mount.TypeVolume, Source: consts.ControlPlaneVolume, Target: cpDataDir},
				{Type: mount.TypeBind, Source: sock, Target: "/var/run/docker.sock"},
			}, extra...),
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
			LogConfig:     cpLogConfig,
		},
	})
	if err != nil {
		return "", fmt.Errorf("create control plane container: %w", err)
	}
	return res.ID, nil
}

// dockerSocketPath is the engine's unix socket on this host, mounted into
// the CP so it watches the same engine the CLI talks to.
func dockerSocketPath(c interface{ DaemonHost() string }) string {
	if u, err := url.Parse(c.DaemonHost()); err == nil && u.Scheme == "unix" && u.Path != "" {
		return u.Path
	}
	return "/var/run/docker.sock"
}
