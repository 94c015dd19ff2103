package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// TestWalkingSkeleton is issue 2's end-to-end: init → cp up → two agents →
// both registered with the right identity tuple as the admin API reports
// it → user CMD running → docker rm -f one → its row is gone.
func TestWalkingSkeleton(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")

	type spec struct{ project, agent, marker string }
	specs := []spec{
		{"e2e", "alpha", "hello-from-alpha"},
		{"", "beta", "hello-from-beta"}, // a global agent: no project
	}
	ids := map[string]string{}
	for _, s := range specs {
		args := []string{"run", "-d", "--agent", s.agent}
		if s.project != "" {
			args = append(args, "--project", s.project)
		}
		args = append(args, agentImage, "sh", "-c", "echo "+s.marker+"; exec sleep 3600")
		r := e.must(args...)
		id := strings.TrimSpace(r.stdout)
		if len(id) != 64 {
			t.Fatalf("run -d printed %q, want a 64-hex container ID", id)
		}
		ids[s.agent] = id
	}

	eventually(t, 90*time.Second, "both agents registered and initialised", func() error {
		rows := e.agents()
		for _, s := range specs {
			r, ok := findAgent(rows, ids[s.agent])
			if !ok || !r.Registered || r.Init != "completed" {
				return fmt.Errorf("%s: %+v", s.agent, r)
			}
		}
		return nil
	})

	rows := e.agents()
	for _, s := range specs {
		id := ids[s.agent]
		r, _ := findAgent(rows, id)
		want := certThumbprint(t, containerFile(t, id, consts.BootstrapDir+"/"+consts.BootstrapCert))
		if r.Thumbprint != want {
			t.Errorf("%s: registry thumbprint %s, cert in container %s", s.agent, r.Thumbprint, want)
		}
		if r.Agent != s.agent || r.Project != s.project || r.ContainerID != id {
			t.Errorf("%s: row (%s, %s, %s), want (%s, %s, %s)", s.agent, r.Agent, r.Project, r.ContainerID, s.agent, s.project, id)
		}
		if r.Session != "connected" || !r.Trusted {
			t.Errorf("%s: session %s trusted %v, want connected and trusted", s.agent, r.Session, r.Trusted)
		}
		insp, err := suite.docker.ContainerInspect(context.Background(), id, mobyclient.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if hc := insp.Container.HostConfig; hc == nil || !slices.ContainsFunc(hc.CapDrop, func(c string) bool { return strings.TrimPrefix(c, "CAP_") == "NET_RAW" }) {
			t.Errorf("%s: NET_RAW not dropped (raw sockets allow ARP spoofing of another agent's IP)", s.agent)
		}
		eventually(t, 30*time.Second, s.agent+" user CMD output", func() error {
			if logs := containerLogs(t, id); !strings.Contains(logs, s.marker) {
				return fmt.Errorf("logs lack %q:\n%s", s.marker, logs)
			}
			return nil
		})
	}

	// The table names both agents too.
	table := e.must("agents").stdout
	for _, s := range specs {
		if !strings.Contains(table, s.agent) {
			t.Errorf("agents table lacks %s:\n%s", s.agent, table)
		}
	}

	if _, err := suite.docker.ContainerRemove(context.Background(), ids["alpha"], mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "alpha's row evicted", func() error {
		rows := e.agents()
		if r, ok := findAgent(rows, ids["alpha"]); ok {
			return fmt.Errorf("alpha still listed: %+v", r)
		}
		if r, ok := findAgent(rows, ids["beta"]); !ok || !r.Registered {
			return fmt.Errorf("beta lost: %+v", r)
		}
		return nil
	})
}

// TestBadInputsOnEngine: refusals on the real engine exit non-zero with a
// message saying what to do, and leave nothing behind.
func TestBadInputsOnEngine(t *testing.T) {
	e := newEnv(t)
	if r := e.clawker("agents"); r.code != 2 || !strings.Contains(r.stderr, "clawker init") {
		t.Errorf("agents before init: %s", r)
	}
	e.must("init")
	if r := e.clawker("agents"); r.code != 3 || !strings.Contains(r.stderr, "cp up") {
		t.Errorf("agents with no CP: %s", r)
	}
	e.must("cp", "up", "--wait", "90s")
	if r := e.clawker("run", "-d", "--agent", "ghost", "clawker-e2e-no-such-image:latest"); r.code != 4 || !strings.Contains(r.stderr, "Unable to find image") || !strings.Contains(r.stderr, "no-such-image") {
		t.Errorf("missing image: %s", r)
	}
	if r := e.clawker("run", "-d", "--agent", "Not_A Name", agentImage); r.code != 2 {
		t.Errorf("bad name: %s", r)
	}
	id := strings.TrimSpace(e.must("run", "-d", "--agent", "dup", agentImage, "sleep", "3600").stdout)
	if r := e.clawker("run", "-d", "--agent", "dup", agentImage, "sleep", "3600"); r.code != 2 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("duplicate agent: %s", r)
	}
	if r := e.clawker("rm", "dup"); r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Errorf("rm running agent without --force: %s", r)
	}
	if r := e.clawker("rm", "nobody"); r.code != 4 {
		t.Errorf("rm unknown agent: %s", r)
	}
	// Nothing half-created: only the one good agent container exists.
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+consts.PurposeAgent)
	res, err := suite.docker.ContainerList(context.Background(), mobyclient.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 || res.Items[0].ID != id {
		t.Errorf("agent containers after refusals: %d (want only %s)", len(res.Items), id)
	}
	// clawkerd runs from the agent's own labelled volume, which clawker rm
	// removes with the container.
	vol := clawkerdVolume(t, id)
	e.must("rm", "--force", "dup")
	if _, err := suite.docker.VolumeInspect(context.Background(), vol, mobyclient.VolumeInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("clawkerd volume %s after clawker rm: err=%v, want not found", vol, err)
	}
	e.must("cp", "down")
	if r := e.clawker("exec", "dup", "--", "true"); r.code != 3 {
		t.Errorf("exec with the CP down: %s", r)
	}
}

// clawkerdVolume returns the name of the volume mounted at ClawkerdDir in
// agent container id, failing unless it is a clawkerd-bin volume holding
// the entrypoint.
func clawkerdVolume(t *testing.T, id string) string {
	t.Helper()
	ctx := context.Background()
	in, err := suite.docker.ContainerInspect(ctx, id, mobyclient.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ep := in.Container.Config.Entrypoint; len(ep) == 0 || ep[0] != consts.ClawkerdPath {
		t.Errorf("entrypoint %v, want %s first", ep, consts.ClawkerdPath)
	}
	for _, m := range in.Container.Mounts {
		if m.Destination != consts.ClawkerdDir {
			continue
		}
		if m.Type != "volume" || m.Name == "" {
			t.Fatalf("mount at %s is %+v, want a volume", consts.ClawkerdDir, m)
		}
		v, err := suite.docker.VolumeInspect(ctx, m.Name, mobyclient.VolumeInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := v.Volume.Labels[consts.LabelPurpose]; got != consts.PurposeClawkerdBin {
			t.Errorf("volume %s purpose label %q, want %q", m.Name, got, consts.PurposeClawkerdBin)
		}
		return m.Name
	}
	t.Fatalf("no mount at %s in %+v", consts.ClawkerdDir, in.Container.Mounts)
	return ""
}
