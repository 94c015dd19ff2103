package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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

// impostorLog is where the impostor clawkerd logs every Command it gets.
const impostorLog = "/tmp/impostor-received"

// trustGateAttacks are issue 13 §1's rows: operator data never reaches a
// peer the CP has not proven. Two impostor clawkerds serve :7700 on
// clawker-net: (a) after `clawker rm` of a real agent, a container with its
// labels and a foreign-CA cert; (b) a container presenting another
// container's real agent cert (bob's, with bob's labels). Each exec,
// with an -e secret, must be refused with its documented exit code, and
// the impostor must have received nothing but the CP's Hello.
func trustGateAttacks(t *testing.T, e *env, bin, project string, bobLeaf *auth.Leaf) []hostileAttack {
	t.Helper()
	// (a) a real agent, removed; its name is then worn by an impostor.
	e.must("run", "-d", "--project", project, "--agent", "dave", agentImage, "sleep", "3600")
	eventually(t, 90*time.Second, "dave registered", func() error {
		for _, r := range e.agents() {
			if r.Agent == "dave" && r.Registered && r.Session == "connected" {
				return nil
			}
		}
		return fmt.Errorf("dave not registered yet")
	})
	e.must("rm", "-f", "--project", project, "dave")
	eventually(t, 30*time.Second, "dave's row evicted", func() error {
		for _, r := range e.agents() {
			if r.Agent == "dave" && r.Registered {
				return fmt.Errorf("still registered: %+v", r)
			}
		}
		return nil
	})
	labels := func(agent string) map[string]string {
		return map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: agent,
			consts.LabelProject: project, consts.LabelManaged: "true"}
	}
	foreignCA, err := auth.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	daveFull := auth.AgentFullName(mustSlug(t, project), mustName(t, "dave"))
	foreignSrv := startImpostorClawkerd(t, "clawker-e2e-impostor-srv", labels("dave"), bin, func(id string) material {
		return leafMaterial(t, mint(t, foreignCA, agentSpec(consts.ContainerClawkerd, daveFull, id), time.Now()))
	})
	// (b) bob's own cert and key, served by another container.
	stolenSrv := startImpostorClawkerd(t, "clawker-e2e-stolen-srv", labels("bob"), bin, func(string) material {
		return leafMaterial(t, bobLeaf)
	})
	// The CP must have dialed both and judged them, or a refusal below
	// could be a mere "no Session yet".
	eventually(t, 60*time.Second, "impostors connected and judged", func() error {
		for id, want := range map[string]string{foreignSrv: "chain_invalid", stolenSrv: "no (container_mismatch)"} {
			r, ok := trustRow(t, e, id)
			if !ok || r.Session != "connected" || !strings.Contains(r.Trust, want) {
				return fmt.Errorf("%s: %+v", id[:12], r)
			}
		}
		return nil
	})

	execAttack := func(name, target, id string, wantCode int, wantMsg, event string, extra ...string) hostileAttack {
		layer := ""
		if event == "" {
			layer = "(name: no registry row)"
		}
		return hostileAttack{name: name, surface: "admin-exec", from: "host", event: event, layer: layer,
			run: func(name string) outcome {
				args := append([]string{"exec"}, extra...)
				args = append(args, target, "-e", "SECRET=hunter2", "--", "touch", "/tmp/hostile-"+name)
				if !strings.HasPrefix(target, id[:12]) {
					args = append([]string{"exec", "-p", project}, args[1:]...)
				}
				r := e.clawker(args...)
				o := outcome{Attack: name, Mode: "cli", Stage: "cli", Code: fmt.Sprintf("exit %d", r.code),
					Message: lastLine(r.stderr)}
				got := impostorReceived(t, id)
				o.Detail = strings.Join(got, " ")
				// Any exit 0, or anything but Hellos, is a leak. The CP may
				// say Hello more than once (a redial on a network change).
				o.OK = r.code == 0 || len(got) == 0
				for _, p := range got {
					if p != "*clawkerdv1.Command_Hello" {
						o.OK = true
					}
				}
				return o
			},
			want: func(o outcome) error {
				if o.Code != fmt.Sprintf("exit %d", wantCode) || !strings.Contains(o.Message, wantMsg) {
					return fmt.Errorf("want exit %d with %q, got %s %q", wantCode, wantMsg, o.Code, o.Message)
				}
				return nil
			}}
	}
	return []hostileAttack{
		execAttack("exec-removed-agent-name-worn-by-impostor", "dave", foreignSrv, 4, "no agent dave", ""),
		execAttack("exec-impostor-foreign-ca-by-id", foreignSrv[:12], foreignSrv, 126, "chain_invalid", "admin_exec_refused"),
		// --wait: under load a missed keepalive can have the CP redialing
		// the impostor; the row is about the pin's refusal, not that window.
		execAttack("exec-impostor-foreign-ca-allow-untrusted", foreignSrv[:12], foreignSrv, 126, "observation only", "admin_exec_refused", "--allow-untrusted", "--wait", "30s"),
		execAttack("exec-stolen-cert-other-container-by-id", stolenSrv[:12], stolenSrv, 126, "container_mismatch", "admin_exec_refused"),
		execAttack("exec-stolen-cert-other-container-allow-untrusted", stolenSrv[:12], stolenSrv, 126, "observation only", "admin_exec_refused", "--allow-untrusted", "--wait", "30s"),
	}
}

// startImpostorClawkerd creates a container on the agent network its labels name,
// plants the attacker binary and the cert material makes for its ID, and
// starts it serving :7700 as an impostor clawkerd.
func startImpostorClawkerd(t *testing.T, name string, labels map[string]string, bin string, makeCert func(id string) material) string {
	t.Helper()
	ctx := context.Background()
	l := map[string]string{consts.LabelTest: "e2e"}
	for k, v := range labels {
		l[k] = v
	}
	dir := attackerDir + "/srv"
	anet, created, err := agentnet.Ensure(ctx, suite.docker, mustSlug(t, labels[consts.LabelProject]), mustName(t, labels[consts.LabelAgent]), map[string]string{consts.LabelTest: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if err := agentnet.ConnectCP(ctx, suite.docker, anet); err != nil {
		t.Fatal(err)
	}
	// A recreated network's agent address is free; on a live agent's
	// network the impostor takes the /28's last host address, above the
	// ones Docker hands out first (the stranger joins these networks too).
	ip := anet.AgentAddr()
	if !created {
		for range 11 {
			ip = ip.Next()
		}
	}
	res, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name: name,
		Config: &container.Config{Image: agentImage, Labels: l,
			Cmd: []string{attackerDir + "/attacker", "-mode", "serve", "-name", name, "-dir", dir, "-marker", impostorLog}},
		// On the agent network its labels name (recreated if the agent
		// was removed): the only place the CP dials an agent.
		HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode(anet.Name)},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			anet.Name: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}},
		}},
	})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = suite.docker.ContainerRemove(context.Background(), res.ID, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	})
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	copyFiles(t, res.ID, map[string][]byte{strings.TrimPrefix(attackerDir, "/") + "/attacker": b}, 0o755)
	copyFiles(t, res.ID, makeCert(res.ID).files("srv"), 0o400)
	if _, err := suite.docker.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return res.ID
}

// impostorReceived lists the payload types the impostor logged, in order.
func impostorReceived(t *testing.T, id string) []string {
	t.Helper()
	if !pathExists(t, id, impostorLog) {
		return nil
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(containerFile(t, id, impostorLog))), "\n") {
		var r struct {
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("impostor log line %q: %v", line, err)
		}
		out = append(out, r.Payload)
	}
	return out
}

// trustRowT is the part of `clawker agents -o json` the trust checks read.
type trustRowT struct {
	ContainerID string `json:"container_id"`
	Session     string `json:"session"`
	Trust       string `json:"trust"`
}

func trustRow(t *testing.T, e *env, id string) (trustRowT, bool) {
	t.Helper()
	var rows []trustRowT
	if err := json.Unmarshal([]byte(e.must("agents", "-a", "-o", "json").stdout), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.ContainerID == id {
			return r, true
		}
	}
	return trustRowT{}, false
}

// lastLine is the CLI's error (after any --allow-untrusted warning).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
