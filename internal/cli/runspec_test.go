package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/consts"
)

func TestAgentContainerSpec(t *testing.T) {
	pool := netip.MustParsePrefix("10.99.4.0/29")
	n := agentnet.Net{Name: "clawker-agent.web.dev", Subnet: pool}
	web, _ := auth.NewProjectSlug("web")
	dev, _ := auth.NewAgentName("dev")
	for _, tc := range []struct {
		name       string
		s          agentSpec
		wantName   string
		project    bool // project label set
		attach     bool
		autoRemove bool
	}{
		{"project agent attached", agentSpec{project: web, agent: dev, attach: true}, "clawker.web.dev", true, true, false},
		{"global agent detached --rm", agentSpec{agent: dev, autoRemove: true}, "clawker.dev", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.image, s.cmd, s.user, s.env, s.workdir, s.net = "busybox", []string{"sleep", "1"}, "1000", []string{"A=1"}, "/w", n
			o := agentContainerSpec(s)
			if o.Name != tc.wantName {
				t.Errorf("name %q, want %q", o.Name, tc.wantName)
			}
			cfg, hc := o.Config, o.HostConfig
			if !slices.Equal(cfg.Entrypoint, []string{consts.ClawkerdPath, "--"}) || !slices.Equal(cfg.Cmd, s.cmd) || cfg.User != "0:0" || cfg.WorkingDir != "/w" {
				t.Errorf("config: %+v", cfg)
			}
			if cfg.AttachStdout != tc.attach || cfg.AttachStderr != tc.attach || hc.AutoRemove != tc.autoRemove {
				t.Errorf("attach %v/%v autoRemove %v", cfg.AttachStdout, cfg.AttachStderr, hc.AutoRemove)
			}
			_, hasProject := cfg.Labels[consts.LabelProject]
			if cfg.Labels[consts.LabelPurpose] != consts.PurposeAgent || cfg.Labels[consts.LabelAgent] != "dev" || hasProject != tc.project {
				t.Errorf("labels %v", cfg.Labels)
			}
			cpAgent := netip.AddrPortFrom(n.CPAddr(), consts.PortAgent).String()
			for _, want := range []string{"A=1", consts.EnvAgent + "=dev", consts.EnvUser + "=1000", consts.EnvCPAgentAddr + "=" + cpAgent} {
				if !slices.Contains(cfg.Env, want) {
					t.Errorf("env %v lacks %s", cfg.Env, want)
				}
			}
			if len(s.env) != 1 {
				t.Errorf("spec appended to the caller's env slice: %v", s.env)
			}
			if !slices.Contains(hc.CapDrop, "NET_RAW") || string(hc.NetworkMode) != n.Name {
				t.Errorf("host config %+v", hc)
			}
			ep := o.NetworkingConfig.EndpointsConfig[n.Name]
			if ep == nil || ep.IPAMConfig.IPv4Address != n.AgentAddr() {
				t.Errorf("endpoint %+v, want pinned %s", ep, n.AgentAddr())
			}
		})
	}
}

// The bundle holds the root-only bootstrap files (a leaf bound to the
// container ID, the CA, the assertion), clawkerd, and the hooks.
func TestBootstrapBundle(t *testing.T) {
	h := auth.Home{Dir: initHome(t)}
	ca, err := h.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := h.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	web, _ := auth.NewProjectSlug("web")
	dev, _ := auth.NewAgentName("dev")
	id := strings.Repeat("5e", 32)
	bin := filepath.Join(t.TempDir(), "clawkerd")
	if err := os.WriteFile(bin, []byte("ELF-ish"), 0o755); err != nil {
		t.Fatal(err)
	}
	creds, err := mintBootstrap(ca, signer, web, dev, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		hooks   config.Hooks
		secrets map[string][]byte
		want    map[string]int64 // path → mode
		absent  []string
	}{
		{"no hooks", config.Hooks{}, nil,
			map[string]int64{"run/clawker/bootstrap/" + consts.BootstrapKey: 0o400, "run/clawker/bootstrap/" + consts.BootstrapAssert: 0o400, consts.ClawkerdPath[1:]: 0o755},
			[]string{consts.StagingDir[1:] + "/" + consts.StagedHookPreRun}},
		{"hooks and a secret", config.Hooks{PreRun: "echo hi"}, map[string][]byte{"tok": []byte("s")},
			map[string]int64{consts.StagingDir[1:] + "/" + consts.StagedHookPreRun: 0o555, consts.StagingDir[1:] + "/" + consts.StagedSecrets + "/tok": 0o400},
			[]string{consts.StagingDir[1:] + "/" + consts.StagedHookPostInit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := bootstrapBundle(context.Background(), time.Unix(0, 0), creds, bin, tc.hooks, tc.secrets)
			if err != nil {
				t.Fatal(err)
			}
			files, modes := untar(t, data)
			for p, m := range tc.want {
				if modes[p] != m {
					t.Errorf("%s mode %o, want %o", p, modes[p], m)
				}
			}
			for _, p := range tc.absent {
				if _, ok := modes[p]; ok {
					t.Errorf("%s present", p)
				}
			}
			if string(files[consts.ClawkerdPath[1:]]) != "ELF-ish" {
				t.Errorf("clawkerd content %q", files[consts.ClawkerdPath[1:]])
			}
			blk, _ := pem.Decode(files[strings.TrimPrefix(consts.BootstrapDir, "/")+"/"+consts.BootstrapCert])
			if blk == nil {
				t.Fatal("no leaf cert in the bundle")
			}
			leaf, err := x509.ParseCertificate(blk.Bytes)
			if err != nil || !strings.Contains(leafSANs(leaf), id) {
				t.Errorf("leaf not bound to %s: %v %s", id, err, leafSANs(leaf))
			}
		})
	}
}

func leafSANs(c *x509.Certificate) string {
	var s []string
	for _, u := range c.URIs {
		s = append(s, u.String())
	}
	return strings.Join(append(s, c.DNSNames...), " ")
}

func untar(t *testing.T, data []byte) (map[string][]byte, map[string]int64) {
	t.Helper()
	files, modes := map[string][]byte{}, map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, modes
		}
		if err != nil {
			t.Fatal(err)
		}
		modes[h.Name] = h.Mode
		files[h.Name], _ = io.ReadAll(tr)
	}
}
