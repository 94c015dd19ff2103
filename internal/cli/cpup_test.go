package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

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
	// The CP lives in the holder's network namespace, which runs hold.
	holder := f.find(consts.ControlPlaneNetContainer)
	if holder == nil || holder.state != container.StateRunning || !slices.Equal(holder.cmd, []string{"hold"}) ||
		holder.hc.NetworkMode != consts.NetworkName || holder.labels[consts.LabelPurpose] != consts.PurposeControlPlaneNet {
		t.Fatalf("holder after up: %+v", holder)
	}
	if cp.hc.NetworkMode != container.NetworkMode("container:"+holder.id) {
		t.Fatalf("CP network mode %q, want the holder's namespace", cp.hc.NetworkMode)
	}
	// The holder publishes admin and health on loopback only and answers to
	// the CP's name on clawker-net; the CP publishes nothing itself.
	if len(holder.hc.PortBindings) != 2 {
		t.Fatalf("holder ports %v", holder.hc.PortBindings)
	}
	for p, bs := range holder.hc.PortBindings {
		if len(bs) != 1 || bs[0].HostIP.String() != "127.0.0.1" {
			t.Fatalf("holder port %s bound to %v", p, bs)
		}
	}
	if ep := holder.nets.EndpointsConfig[consts.NetworkName]; ep == nil || !slices.Equal(ep.Aliases, []string{consts.ControlPlaneContainer}) {
		t.Fatalf("holder on clawker-net: %+v", ep)
	}
	if len(cp.hc.PortBindings) != 0 || cp.nets != nil {
		t.Fatalf("CP has ports %v or endpoints %+v of its own", cp.hc.PortBindings, cp.nets)
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
	// Replacing the CP keeps its network namespace: nothing to rejoin.
	if f.called("remove", holder.id) || f.find(consts.ControlPlaneNetContainer) != holder || cp2.hc.NetworkMode != cp.hc.NetworkMode {
		t.Fatalf("CP replacement touched the holder: %v", f.calls)
	}
	// --recreate replaces both: the way out of a broken holder.
	p.recreate = true
	if err := a.cpUpWith(ctx, f, p); err != nil {
		t.Fatal(err)
	}
	holder2, cp3 := f.find(consts.ControlPlaneNetContainer), f.find(consts.ControlPlaneContainer)
	if !f.called("remove", holder.id) || holder2 == nil || holder2.id == holder.id ||
		holder2.state != container.StateRunning || cp3.hc.NetworkMode != container.NetworkMode("container:"+holder2.id) {
		t.Fatalf("--recreate did not replace the holder: CP network mode %q, calls %v", cp3.hc.NetworkMode, f.calls)
	}
}

// A CP outside the running holder's namespace is replaced even when its
// image and settings are current: one from before the holder owned the
// CP's address on the agent networks, one from before a holder stop or
// restart has no network at all. The holder itself is kept.
func TestCPUpReplacesCPOutsideHolder(t *testing.T) {
	for name, prep := range map[string]func(f *fakeDocker, cp *fakeCtr){
		"CP on clawker-net itself": func(_ *fakeDocker, cp *fakeCtr) { cp.hc.NetworkMode = consts.NetworkName },
		"holder stopped": func(f *fakeDocker, _ *fakeCtr) {
			f.find(consts.ControlPlaneNetContainer).state = container.StateExited
		},
		// Same ID, new namespace: the CP is left with loopback alone.
		"holder restarted after the CP": func(f *fakeDocker, _ *fakeCtr) {
			_ = f.setState("restart", consts.ControlPlaneNetContainer, container.StateRunning)
		},
	} {
		t.Run(name, func(t *testing.T) {
			a, out, f, p := cpFixture(t)
			ctx := context.Background()
			if err := a.cpUpWith(ctx, f, p); err != nil {
				t.Fatal(err)
			}
			cp := f.find(consts.ControlPlaneContainer)
			cp.image = "sha256:cpimg"
			holder := f.find(consts.ControlPlaneNetContainer)
			prep(f, cp)
			out.Reset()
			if err := a.cpUpWith(ctx, f, p); err != nil {
				t.Fatal(err)
			}
			cp2 := f.find(consts.ControlPlaneContainer)
			if strings.Contains(out.String(), "already running") || cp2 == nil || cp2.id == cp.id {
				t.Fatalf("CP kept: %q %v", out.String(), f.calls)
			}
			if holder.state != container.StateRunning || f.find(consts.ControlPlaneNetContainer) != holder ||
				cp2.hc.NetworkMode != container.NetworkMode("container:"+holder.id) {
				t.Fatalf("holder %s, CP network mode %q", holder.state, cp2.hc.NetworkMode)
			}
		})
	}
}

// A container under the holder's name that clawker did not make (anyone
// with the Docker API can), or a stopped holder that will not start, is
// replaced, never shared.
func TestCPUpReplacesHolder(t *testing.T) {
	for name, prep := range map[string]func(h *fakeCtr){
		"privileged":        func(h *fakeCtr) { h.hc.Privileged = true },
		"port on 0.0.0.0":   func(h *fakeCtr) { h.hc.PortBindings[cpPorts()[0]][0].HostIP = netip.IPv4Unspecified() },
		"another command":   func(h *fakeCtr) { h.cmd = []string{"sh"} },
		"a bind mount":      func(h *fakeCtr) { h.hc.Binds = []string{"/:/host"} },
		"stopped, no start": func(h *fakeCtr) { h.state, h.noStart = container.StateExited, true },
	} {
		t.Run(name, func(t *testing.T) {
			a, _, f, p := cpFixture(t)
			ctx := context.Background()
			if err := a.cpUpWith(ctx, f, p); err != nil {
				t.Fatal(err)
			}
			old := f.find(consts.ControlPlaneNetContainer)
			prep(old)
			if err := a.cpUpWith(ctx, f, p); err != nil {
				t.Fatal(err)
			}
			holder, cp := f.find(consts.ControlPlaneNetContainer), f.find(consts.ControlPlaneContainer)
			if !f.called("remove", old.id) || holder == nil || holder == old || holder.state != container.StateRunning || !ownCPNet(inspectFake(t, f, holder.id)) {
				t.Fatalf("holder not replaced: %v", f.calls)
			}
			if cp.hc.NetworkMode != container.NetworkMode("container:"+holder.id) {
				t.Fatalf("CP network mode %q", cp.hc.NetworkMode)
			}
		})
	}
}

func inspectFake(t *testing.T, f *fakeDocker, id string) container.InspectResponse {
	t.Helper()
	res, err := f.ContainerInspect(context.Background(), id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Container
}

func TestCPDown(t *testing.T) {
	cp := &fakeCtr{id: strings.Repeat("c", 64), name: consts.ControlPlaneContainer, state: container.StateRunning}
	holder := &fakeCtr{id: strings.Repeat("d", 64), name: consts.ControlPlaneNetContainer, state: container.StateRunning}
	agent := &fakeCtr{id: strings.Repeat("a", 64), name: "clawker.p.a", state: container.StateExited,
		labels: map[string]string{consts.LabelPurpose: consts.PurposeAgent}}
	f := &fakeDocker{containers: []*fakeCtr{cp, holder, agent}, volumes: map[string]map[string]string{consts.ControlPlaneVolume: nil}}
	h := &harness{home: initHome(t), docker: f}
	out, stderr, code := h.run(t, "cp", "down")
	if code != 0 || out != "control plane removed\n" || !f.called("stop-t10", cp.id) || !f.called("remove", cp.id) {
		t.Fatalf("cp down: %d %q %q %v", code, out, stderr, f.calls)
	}
	// An agent container is left, even stopped: the holder stays on its
	// network for the next CP.
	if f.called("remove", holder.id) {
		t.Fatal("cp down removed the network holder while an agent remains")
	}
	f.containers = slices.DeleteFunc(f.containers, func(c *fakeCtr) bool { return c == agent })
	if out, _, code := h.run(t, "cp", "down"); code != 0 || !f.called("remove", holder.id) ||
		!strings.Contains(out, consts.ControlPlaneNetContainer+" removed") {
		t.Fatalf("cp down with no agent network left: %d %q %v", code, out, f.calls)
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
