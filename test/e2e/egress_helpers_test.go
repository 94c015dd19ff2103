package e2e

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// The fake internet of the egress tests: one container on an ordinary
// bridge of its own (not an agent network, not clawker-net) serving HTTPS,
// HTTP, an ssh server on 22 and a DNS zone of test names.
const (
	fakeNetName = "clawker-e2e-fakenet"
	fakeDir     = "/fakenet"
	fakeZone    = "allowed.test,git.test,api.test,evil.test,other.test,grant.test,icp.test,ws.test,wss.test"
)

var (
	fakeSubnet = netip.MustParsePrefix("10.214.77.0/24")
	fakeIP     = netip.MustParseAddr("10.214.77.10")
)

// buildFakenet compiles test/e2e/fakenet statically.
func buildFakenet(t *testing.T) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(t.TempDir(), "fakenet")
	cmd := exec.Command("go", "build", "-o", out, "./test/e2e/fakenet")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fakenet: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startFakeInternet makes the fake bridge and its server; both are
// labelled and removed at cleanup (and by the suite's sweep).
func startFakeInternet(t *testing.T, bin []byte) string {
	t.Helper()
	ctx := context.Background()
	nres, err := suite.docker.NetworkCreate(ctx, fakeNetName, mobyclient.NetworkCreateOptions{Driver: "bridge",
		IPAM:   &network.IPAM{Config: []network.IPAMConfig{{Subnet: fakeSubnet}}},
		Labels: map[string]string{consts.LabelTest: "e2e"}})
	if err != nil {
		t.Fatalf("create %s: %v", fakeNetName, err)
	}
	t.Cleanup(func() {
		_, _ = suite.docker.NetworkDisconnect(context.Background(), nres.ID, mobyclient.NetworkDisconnectOptions{Container: consts.ControlPlaneNetContainer, Force: true})
		_, _ = suite.docker.NetworkRemove(context.Background(), nres.ID, mobyclient.NetworkRemoveOptions{})
	})
	res, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: "clawker-e2e-fakenet-server",
		Config: &container.Config{Image: agentImage, Labels: map[string]string{consts.LabelTest: "e2e"},
			Cmd: []string{fakeDir + "/fakenet", "serve", "-zone", fakeZone, "-ip", fakeIP.String(), "-ca", fakeDir + "/ca.pem"}},
		HostConfig: &container.HostConfig{NetworkMode: fakeNetName},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			fakeNetName: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: fakeIP}}}},
	})
	if err != nil {
		t.Fatalf("create fakenet server: %v", err)
	}
	t.Cleanup(func() {
		_, _ = suite.docker.ContainerRemove(context.Background(), res.ID, mobyclient.ContainerRemoveOptions{Force: true})
	})
	copyFiles(t, res.ID, map[string][]byte{strings.TrimPrefix(fakeDir, "/") + "/fakenet": bin}, 0o755)
	if _, err := suite.docker.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{}); err != nil {
		t.Fatalf("start fakenet server: %v", err)
	}
	eventually(t, 20*time.Second, "fakenet serving", func() error {
		if !pathExists(t, res.ID, fakeDir+"/ca.pem") {
			return os.ErrNotExist
		}
		return nil
	})
	return res.ID
}

// connectCPToFakeNet gives the CP (and so the gateway) its route to the
// fake internet, as the host's uplink would in production.
func connectCPToFakeNet(t *testing.T) {
	t.Helper()
	if _, err := suite.docker.NetworkConnect(context.Background(), fakeNetName, mobyclient.NetworkConnectOptions{
		Container: consts.ControlPlaneNetContainer, EndpointConfig: &network.EndpointSettings{}}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("connect CP to %s: %v", fakeNetName, err)
	}
}

// plantFakenet copies the client and the fake internet's CA into id.
func plantFakenet(t *testing.T, id string, bin, ca []byte) {
	t.Helper()
	dir := strings.TrimPrefix(fakeDir, "/")
	copyFiles(t, id, map[string][]byte{dir + "/fakenet": bin}, 0o755)
	if ca != nil {
		copyFiles(t, id, map[string][]byte{dir + "/ca.pem": ca}, 0o644)
	}
}

// fakenet runs the client in id; ok is exit 0. Its env is the agent's
// (docker exec inherits the container's Env).
func fakenet(t *testing.T, id string, args ...string) (string, bool) {
	t.Helper()
	out, code := execIn(t, id, append([]string{fakeDir + "/fakenet"}, args...)...)
	return strings.TrimSpace(out), code == 0
}
