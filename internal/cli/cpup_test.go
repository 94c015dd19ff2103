package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// cpFixture is a home, a clawker-cp "binary" and a fake engine holding the
// CP image imported from it.
func cpFixture(t *testing.T) (*app, *bytes.Buffer, *fakeDocker, cpUpPlan) {
	t.Helper()
	h := auth.Home{Dir: initHome(t)}
	bin := filepath.Join(t.TempDir(), "clawker-cp")
	if err := os.WriteFile(bin, []byte("cp binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{consts.CPCertFile, consts.CPKeyFile, consts.CACertFile, consts.SigningPubFile}
	keys, err := filesSHA256(h, files)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDocker{images: map[string]string{
		consts.ControlPlaneImage: fmt.Sprintf(`{"Id":"sha256:cpimg","Config":{"Labels":{%q:%q}}}`, labelCPBinary, sum)}}
	var out bytes.Buffer
	a := &app{out: &out, errOut: &out, now: time.Now,
		credServer: func(auth.Home) (string, error) { return "", errors.New("not in unit tests") }}
	return a, &out, f, cpUpPlan{home: h, files: files, bin: bin, keysSum: keys, policy: "log"}
}

func TestCPUpCreatesThenKeepsThenReplaces(t *testing.T) {
	a, out, f, p := cpFixture(t)
	ctx := context.Background()

	// Fresh: network, volume, container with the keys copied in, started.
	if err := a.cpUpWith(ctx, f, p); err != nil {
		t.Fatal(err)
	}
	cp := f.find(consts.ControlPlaneContainer)
	if cp == nil || cp.state != container.StateRunning || cp.image != consts.ControlPlaneImage {
		t.Fatalf("CP container after up: %+v", cp)
	}
	if cp.labels[labelCPKeys] != p.keysSum || cp.labels[consts.LabelPurpose] != consts.PurposeControlPlane ||
		!slices.Contains(cp.env, "CLAWKER_CP_UNTRUSTED_POLICY=log") {
		t.Errorf("labels %v env %v", cp.labels, cp.env)
	}
	if !f.called("network-create", consts.NetworkName) || !f.called("volume-create", consts.ControlPlaneVolume) {
		t.Errorf("calls %v", f.calls)
	}
	if len(cp.copied) != 1 {
		t.Fatalf("%d copies into the CP", len(cp.copied))
	}
	files, modes := untar(t, cp.copied[0])
	key := strings.TrimPrefix(cpConfigDir, "/") + "/" + consts.CPKeyFile
	want, _ := os.ReadFile(p.home.Path(consts.CPKeyFile))
	if modes[key] != 0o400 || !bytes.Equal(files[key], want) {
		t.Errorf("CP key in the copy: mode %o, same bytes %v", modes[key], bytes.Equal(files[key], want))
	}
	if !strings.Contains(out.String(), "control plane "+consts.ControlPlaneContainer+" started") {
		t.Errorf("output %q", out.String())
	}

	// Same image, settings and keys: kept.
	out.Reset()
	f.calls = nil
	cp.image = "sha256:cpimg" // the engine reports the image ID
	if err := a.cpUpWith(ctx, f, p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "already running") || f.called("remove", cp.id) || f.called("create", consts.ControlPlaneContainer) {
		t.Fatalf("up-to-date CP touched: %q %v", out.String(), f.calls)
	}

	// Another policy: replaced.
	p.policy = "kill"
	if err := a.cpUpWith(ctx, f, p); err != nil {
		t.Fatal(err)
	}
	cp2 := f.find(consts.ControlPlaneContainer)
	if !f.called("remove", cp.id) || cp2 == nil || cp2.id == cp.id || !slices.Contains(cp2.env, "CLAWKER_CP_UNTRUSTED_POLICY=kill") {
		t.Fatalf("policy change did not replace the CP: %v", f.calls)
	}
}

func TestCPDown(t *testing.T) {
	cp := &fakeCtr{id: strings.Repeat("c", 64), name: consts.ControlPlaneContainer, state: container.StateRunning}
	f := &fakeDocker{containers: []*fakeCtr{cp}, volumes: map[string]map[string]string{consts.ControlPlaneVolume: nil}}
	h := &harness{home: initHome(t), docker: f}
	out, stderr, code := h.run(t, "cp", "down")
	if code != 0 || out != "control plane removed\n" || !f.called("stop-t10", cp.id) || !f.called("remove", cp.id) {
		t.Fatalf("cp down: %d %q %q %v", code, out, stderr, f.calls)
	}
	if f.called("volume-remove", consts.ControlPlaneVolume) {
		t.Fatal("cp down removed the registry volume without --volumes")
	}
	out, _, code = h.run(t, "cp", "down", "--volumes")
	if code != 0 || !strings.Contains(out, "control plane is not running") || !f.called("volume-remove", consts.ControlPlaneVolume) {
		t.Fatalf("cp down --volumes: %d %q %v", code, out, f.calls)
	}
}

// The gateway's test-mode settings reach the CP container's environment
// only when set on the host.
func TestCPEnvPassesEgressTestMode(t *testing.T) {
	t.Setenv(EnvCPEgressUpstreamDNS, "10.0.0.1:53")
	t.Setenv(EnvCPEgressUpstreamCA, "-----BEGIN CERTIFICATE-----\nx\n")
	env := cpEnv("log")
	for _, want := range []string{EnvCPEgressUpstreamDNS + "=10.0.0.1:53", EnvCPEgressUpstreamCA + "=-----BEGIN CERTIFICATE-----\nx\n"} {
		if !slices.Contains(env, want) {
			t.Errorf("cp env %q lacks %q", env, want)
		}
	}
	t.Setenv(EnvCPEgressUpstreamCA, "")
	for _, kv := range cpEnv("log") {
		if strings.HasPrefix(kv, EnvCPEgressUpstreamCA+"=") {
			t.Errorf("unset upstream CA passed: %q", kv)
		}
	}
}
