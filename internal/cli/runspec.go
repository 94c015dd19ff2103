package cli

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/egress/agentenv"
)

// agentSpec is everything an agent container's create call depends on,
// resolved before Docker is asked, so the spec itself is a pure function.
type agentSpec struct {
	project    auth.ProjectSlug
	agent      auth.AgentName
	image      string
	cmd        []string // the user command clawkerd starts
	user       string   // CLAWKER_USER: who the user command runs as
	env        []string // the user's env (clawker's own is added here)
	workdir    string
	attach     bool // attach stdout/stderr (run without -d)
	autoRemove bool // run --rm
	net        agentnet.Net
	binds      []string
	mounts     []mount.Mount
	resources  container.Resources
	tmpfs      map[string]string
	creds      string       // credential kinds the agent opted in to ("" = none)
	tty        bool         // run -t: clawkerd gives the user command a terminal
	dns        []netip.Addr // the egress gateway's resolver
}

// agentContainerSpec is the create request for an agent: clawkerd is the
// entrypoint and the user command its arguments, the identity is in the
// labels and CLAWKER_* env, and the agent sits alone with the CP on its
// own network at its pinned address.
func agentContainerSpec(s agentSpec) mobyclient.ContainerCreateOptions {
	labels := managedLabels(map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: s.agent.String()})
	if !s.project.IsZero() {
		labels[consts.LabelProject] = s.project.String()
	}
	env := append([]string(nil), s.env...)
	if s.creds != "" {
		// The label is the CP's gate (Docker-attested); the env only tells
		// clawkerd which sockets to serve.
		labels[consts.LabelCredentials] = s.creds
		env = append(env, consts.EnvCredentials+"="+s.creds)
	}
	env = append(env,
		consts.EnvAgent+"="+s.agent.String(),
		consts.EnvProject+"="+s.project.String(),
		consts.EnvUser+"="+s.user,
		ttyEnv(s.tty),
		consts.EnvCPAgentAddr+"="+netip.AddrPortFrom(s.net.CPAddr(), consts.PortAgent).String(),
		consts.EnvCPTokenURL+"="+fmt.Sprintf("https://%s%s", netip.AddrPortFrom(s.net.CPAddr(), consts.PortToken), consts.TokenPath),
	)
	env = append(env, agentenv.Env(s.net.CPAddr())...)
	return mobyclient.ContainerCreateOptions{
		Name: auth.AgentFullName(s.project, s.agent),
		Config: &container.Config{
			Image:      s.image,
			Entrypoint: []string{consts.ClawkerdPath, "--"},
			Cmd:        s.cmd,
			Env:        env,
			// clawkerd is PID 1 as root: it reads its 0400 bootstrap files
			// and drops to CLAWKER_USER for the user command.
			User:         "0:0",
			Labels:       labels,
			WorkingDir:   s.workdir,
			AttachStdout: s.attach,
			AttachStderr: s.attach,
		},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode(s.net.Name),
			DNS:         s.dns, // the egress gateway's resolver
			Binds:       s.binds,
			Mounts:      s.mounts,
			Resources:   s.resources,
			Tmpfs:       s.tmpfs,
			AutoRemove:  s.autoRemove,
			// Raw sockets would let an agent spoof another container's IP
			// on its network (ARP), undermining the peer-IP identity anchor.
			CapDrop: []string{"NET_RAW"},
		},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			s.net.Name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: s.net.AgentAddr()}},
		}},
	}
}

// bootstrapCreds are the agent's identity files, its leaf bound to the
// container ID.
type bootstrapCreds = auth.Bootstrap

// mintBootstrap mints the credentials for container id.
func mintBootstrap(ca *auth.CA, signer *ecdsa.PrivateKey, p auth.ProjectSlug, a auth.AgentName, id string, now time.Time) (bootstrapCreds, error) {
	leaf, err := ca.MintAgent(p, a, id, now)
	if err != nil {
		return bootstrapCreds{}, fmt.Errorf("mint agent certificate: %w", err)
	}
	return ca.MintBootstrap(signer, leaf, id, now)
}

// bundleFile is one more file for the bootstrap bundle, in a directory of
// the image (the egress CA, the ssh client config).
type bundleFile struct {
	path string // absolute path in the agent
	mode int64
	data []byte
}

// bootstrapBundle is the tar copied into the agent before it starts: the
// root-only bootstrap files, clawkerd, and the staging tree (hooks,
// secrets, the host user's git identity and known_hosts).
func bootstrapBundle(ctx context.Context, now time.Time, creds bootstrapCreds, clawkerdPath string, hooks config.Hooks, secrets map[string][]byte, extra ...bundleFile) ([]byte, error) {
	tb := newTarBuilder(now)
	boot := strings.TrimPrefix(consts.BootstrapDir, "/")
	if err := tb.dir(boot, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{consts.BootstrapCert, creds.Cert},
		{consts.BootstrapKey, creds.Key},
		{consts.BootstrapCA, creds.CA},
		{consts.BootstrapAssert, []byte(creds.Assertion)},
	} {
		if err := tb.file(boot+"/"+f.name, 0o400, f.data); err != nil {
			return nil, err
		}
	}
	if err := tb.hostFile(strings.TrimPrefix(consts.ClawkerdPath, "/"), 0o755, clawkerdPath); err != nil {
		return nil, err
	}
	if err := stageFiles(ctx, tb, strings.TrimPrefix(consts.StagingDir, "/"), hooks, secrets); err != nil {
		return nil, err
	}
	for _, f := range extra {
		if err := tb.imageFile(strings.TrimPrefix(f.path, "/"), f.mode, f.data); err != nil {
			return nil, err
		}
	}
	return tb.bytes()
}
