package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
)

// TestRunPullWithoutRegistry: an image that is not local is pulled
// through the engine; with no registry reachable (this machine has none)
// run fails cleanly: exit 4, the image named, nothing left behind.
func TestRunPullWithoutRegistry(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	for _, img := range []string{"127.0.0.1:9/clawker-e2e/absent:1", "clawker-e2e-surely-absent:1"} {
		r := e.clawker("run", "-d", "--name", "puller", img)
		if r.code != 4 || !strings.Contains(r.stderr, "Unable to find image '"+img+"' locally") ||
			!strings.Contains(r.stderr, "pull image "+img) || !strings.Contains(r.stderr, "registry reachable") {
			t.Errorf("run %s: %s", img, r)
		}
		if strings.Contains(r.stderr, "panic") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 3 {
			t.Errorf("run %s: not a clean failure: %s", img, r)
		}
	}
	f := make(mobyclient.Filters).Add("name", "puller")
	if res, err := suite.docker.ContainerList(context.Background(), mobyclient.ContainerListOptions{All: true, Filters: f}); err != nil || len(res.Items) != 0 {
		t.Errorf("a failed pull left containers: %v %v", res.Items, err)
	}
	if r := e.clawker("run", "-d", "--pull", "never", "--name", "puller", "clawker-e2e-surely-absent:1"); r.code != 4 || strings.Contains(r.stderr, "Unable to find") {
		t.Errorf("--pull never: %s", r)
	}
}

// TestRunDockerFlags: --rm, -w and --entrypoint on the real engine, with
// the user CMD's exit code passed through; --rm leaves neither the
// container nor its agent network.
func TestRunDockerFlags(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	r := e.clawker("run", "--rm", "--project", "flags", "--name", "once", "-w", "/tmp", "--entrypoint", "sh",
		agentImage, "-c", "echo wd=$(pwd); exit 3")
	if r.code != 3 || !strings.Contains(r.stdout, "wd=/tmp") {
		t.Fatalf("run --rm -w --entrypoint: %s", r)
	}
	eventually(t, 30*time.Second, "--rm removed the container and its network", func() error {
		f := make(mobyclient.Filters).Add("name", "clawker.flags.once")
		res, err := suite.docker.ContainerList(context.Background(), mobyclient.ContainerListOptions{All: true, Filters: f})
		if err != nil || len(res.Items) != 0 {
			return fmt.Errorf("containers %v %v", res.Items, err)
		}
		if _, err := suite.docker.NetworkInspect(context.Background(), agentnet.NameOf("flags", "once"), mobyclient.NetworkInspectOptions{}); err == nil {
			return fmt.Errorf("network %s still there", agentnet.NameOf("flags", "once"))
		}
		return nil
	})
}
