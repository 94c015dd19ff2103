package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// handMadeAgent is an agent container built the way `clawker run` builds
// one, with the parts an attack or a fault needs changed.
type handMadeAgent struct {
	name, project string
	labelAgent    string // dev.clawker.agent label and CLAWKER_AGENT
	certAgent     string // the cert's agent SAN
	tokenPort     uint16 // CP port in CLAWKER_CP_TOKEN_URL; 0 = the real token endpoint
}

// createAgentContainer creates, provisions and starts a; it returns the ID.
func createAgentContainer(t *testing.T, home string, a handMadeAgent) string {
	t.Helper()
	ctx := context.Background()
	h := auth.Home{Dir: home}
	ca, err := h.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := h.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	// Its own agent network, as clawker run makes it.
	anet, _, err := agentnet.Ensure(ctx, suite.docker, mustSlug(t, a.project), mustName(t, a.labelAgent), map[string]string{consts.LabelTest: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if err := agentnet.ConnectCP(ctx, suite.docker, anet); err != nil {
		t.Fatal(err)
	}
	tokenPort := a.tokenPort
	if tokenPort == 0 {
		tokenPort = consts.PortToken
	}
	tokenURL := fmt.Sprintf("https://%s%s", netip.AddrPortFrom(anet.CPAddr(), tokenPort), consts.TokenPath)
	res, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: a.name,
		Config: &container.Config{
			Image:      agentImage,
			Entrypoint: []string{consts.ClawkerdPath, "--"},
			Cmd:        []string{"sleep", "3600"},
			User:       "0:0",
			Env: []string{
				consts.EnvAgent + "=" + a.labelAgent, consts.EnvProject + "=" + a.project,
				consts.EnvCPAgentAddr + "=" + netip.AddrPortFrom(anet.CPAddr(), consts.PortAgent).String(),
				consts.EnvCPTokenURL + "=" + tokenURL,
			},
			Labels: map[string]string{
				consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: a.labelAgent, consts.LabelProject: a.project,
				consts.LabelManaged: "true", consts.LabelTest: "e2e",
			},
		},
		HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(anet.Name)},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			anet.Name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: anet.AgentAddr()}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := auth.NewProjectSlug(a.project)
	an, _ := auth.NewAgentName(a.certAgent)
	now := time.Now()
	leaf, err := ca.MintAgent(ps, an, res.ID, now)
	if err != nil {
		t.Fatal(err)
	}
	assertion, err := auth.MintAssertion(signer, res.ID, now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := auth.KeyPEM(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	clawkerd, err := os.ReadFile(filepath.Join(suite.binDir, "clawkerd"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, data []byte) {
		typ := byte(tar.TypeReg)
		if data == nil {
			typ = tar.TypeDir
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: typ, Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if data != nil {
			if _, err := tw.Write(data); err != nil {
				t.Fatal(err)
			}
		}
	}
	add("run/", 0o755, nil)
	add("run/clawker/", 0o755, nil)
	add(strings.TrimPrefix(consts.ClawkerdDir, "/")+"/", 0o755, nil)
	add(strings.TrimPrefix(consts.ClawkerdPath, "/"), 0o755, clawkerd)
	add("run/clawker/bootstrap/", 0o700, nil)
	add("run/clawker/bootstrap/"+consts.BootstrapCert, 0o400, auth.CertPEM(leaf.Cert))
	add("run/clawker/bootstrap/"+consts.BootstrapKey, 0o400, keyPEM)
	add("run/clawker/bootstrap/"+consts.BootstrapCA, 0o400, auth.CertPEM(ca.Cert))
	add("run/clawker/bootstrap/"+consts.BootstrapAssert, 0o400, []byte(assertion))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.docker.CopyToContainer(ctx, res.ID, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: &buf}); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.docker.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	return res.ID
}
