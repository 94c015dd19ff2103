package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// TestRegisterRefusedWhenCertDisagreesWithLabels runs a container whose
// labels say agent "mallory" but whose (CA-signed, container-bound) cert
// claims agent "alice". The CP must refuse its Register — no registry row —
// and mark it untrusted, while an honest agent next to it registers. Then
// the CP is recreated with --untrusted-policy pause: after the restart the
// honest agent keeps its row (no re-register) and the forged one, re-dialed
// and again untrusted, is paused on the engine.
func TestRegisterRefusedWhenCertDisagreesWithLabels(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	honest := strings.TrimSpace(e.must("run", "-d", "--project", "e2e", "--agent", "alice", agentImage, "sleep", "3600").stdout)

	forged := createForgedAgent(t, e.home, "e2e", "mallory", "alice")

	eventually(t, 90*time.Second, "forged agent refused, honest agent registered", func() error {
		rows := e.agents()
		h, ok := findAgent(rows, honest)
		if !ok || !h.Registered {
			return fmt.Errorf("honest: %+v", h)
		}
		f, ok := findAgent(rows, forged)
		if !ok || f.Trusted {
			return fmt.Errorf("forged not yet marked untrusted: %+v", f)
		}
		return nil
	})
	// Trust fails closed from the first moment, so wait for the Register
	// attempt itself to be refused before checking that it wrote nothing.
	eventually(t, 30*time.Second, "Register refused with identity_san_mismatch", func() error {
		r := e.must("cp", "logs")
		if logs := r.stdout + r.stderr; !strings.Contains(logs, "identity_san_mismatch") {
			return fmt.Errorf("CP log lacks the classification:\n%s", lastLines(logs, 40))
		}
		return nil
	})
	rows := e.agents()
	if f, _ := findAgent(rows, forged); f.Registered || f.Thumbprint != "" {
		t.Fatalf("forged agent has a registry row: %+v", f)
	}

	honestBefore, _ := findAgent(e.agents(), honest)
	e.must("cp", "up", "--wait", "90s", "--untrusted-policy", "pause")
	eventually(t, 30*time.Second, "policy paused the forged container", func() error {
		if s := inspect(t, forged).State; !s.Paused {
			return fmt.Errorf("state %s", s.Status)
		}
		return nil
	})
	if s := inspect(t, honest).State; !s.Running || s.Paused {
		t.Errorf("honest agent state %s", s.Status)
	}
	eventually(t, 30*time.Second, "honest agent still registered with the same row", func() error {
		h, _ := findAgent(e.agents(), honest)
		if !h.Registered || h.Thumbprint != honestBefore.Thumbprint || h.Session != "connected" {
			return fmt.Errorf("honest after restart: %+v", h)
		}
		return nil
	})
	eventually(t, 30*time.Second, "CP logged untrusted_policy_applied", func() error {
		r := e.must("cp", "logs")
		if logs := r.stdout + r.stderr; !strings.Contains(logs, "untrusted_policy_applied") {
			return fmt.Errorf("CP log lacks it:\n%s", lastLines(logs, 40))
		}
		return nil
	})
}

// createForgedAgent does what `clawker run` does, except the cert's agent
// SAN names certAgent while the labels name labelAgent.
func createForgedAgent(t *testing.T, home, project, labelAgent, certAgent string) string {
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
	res, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: "clawker-e2e-forged",
		Config: &container.Config{
			Image:      agentImage,
			Entrypoint: []string{consts.ClawkerdPath, "--"},
			Cmd:        []string{"sleep", "3600"},
			User:       "0:0",
			Env: []string{
				consts.EnvAgent + "=" + labelAgent, consts.EnvProject + "=" + project,
				consts.EnvCPAgentAddr + "=" + fmt.Sprintf("%s:%d", consts.ControlPlaneContainer, consts.PortAgent),
				consts.EnvCPTokenURL + "=" + fmt.Sprintf("https://%s:%d%s", consts.ControlPlaneContainer, consts.PortToken, consts.TokenPath),
			},
			Labels: map[string]string{
				consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: labelAgent, consts.LabelProject: project,
				consts.LabelManaged: "true", consts.LabelTest: "e2e",
			},
		},
		HostConfig:       &container.HostConfig{NetworkMode: container.NetworkMode(consts.NetworkName)},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{consts.NetworkName: {}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := auth.NewProjectSlug(project)
	an, _ := auth.NewAgentName(certAgent)
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

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
