package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const sshPolicy = `egress:
  defaults: false
  allow:
    - {name: git-ssh, host: git.test, ports: [22]}
    - {name: web, host: allowed.test, ports: [443]}
  deny:
    - {name: no-evil, host: evil.test}
`

// TestEgressPlainSSH (issue 18: TCP to an allowed host:port through
// CONNECT): in an agent, plain `ssh host` with no ProxyCommand or
// setup of the user's reaches an allowed host on 22 through the egress
// gateway, by the ProxyCommand clawker run installs (the image's
// ssh_config lacks the Include, so run puts it in ssh_config). A denied host, or the
// allowed host on another port, fails with the gateway's refusal shown;
// a user's own config overrides the drop-in.
func TestEgressPlainSSH(t *testing.T) {
	e := newEnv(t)
	importGitImage(t)
	e.must("init")
	bin := buildFakenet(t)
	startFakeInternet(t, bin)
	t.Setenv("CLAWKER_CP_EGRESS_UPSTREAM_DNS", netip.AddrPortFrom(fakeIP, 53).String())
	e.must("cp", "up", "--wait", "90s")
	connectCPToFakeNet(t)

	const project = "egssh"
	id := strings.TrimSpace(e.must("run", "-d", "--project", project, "--agent", "dev", "--project-dir", writeYAML(t, sshPolicy),
		gitImage, "sleep", "3600").stdout)
	// clawker exec needs the Session past init, not only a trusted agent.
	waitInit(t, e, id)
	eventually(t, 90*time.Second, "dev trusted", func() error {
		if r, ok := findAgent(e.agents(), id); !ok || !r.Trusted {
			return fmt.Errorf("%+v", r)
		}
		return nil
	})
	// The agent's user, its env, its shell: what a person in the agent
	// runs. Host keys are the user's business, not the tunnel's.
	ssh := func(args string) result {
		t.Helper()
		return e.clawker("exec", "--project", project, "dev", "--", "sh", "-c",
			"exec ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 "+args+" 2>&1")
	}

	if r := ssh("git@git.test hello-from-agent"); r.code != 0 || !strings.Contains(r.stdout, "fakenet ssh user=git ran=hello-from-agent") {
		t.Errorf("allowed git.test:22: want the server's answer, got %s", r)
	}
	for _, target := range []string{"git@evil.test hi", "git@other.test hi", "-p 2222 git@git.test hi"} {
		if r := ssh(target); r.code == 0 || !strings.Contains(r.stdout, "refused the tunnel: 403 Forbidden") || strings.Contains(r.stdout, "fakenet ssh") {
			t.Errorf("ssh %s: want the gateway's refusal, got %s", target, r)
		} else {
			t.Logf("ssh %s: exit %d: %s", target, r.code, strings.SplitN(r.stdout, "\n", 2)[0])
		}
	}

	// The tunnels are audited like any egress: agent, host, port, rule.
	var allowed, denied bool
	for _, line := range strings.Split(strings.TrimSpace(e.must("egress", "log", "--project", project, "--since", "10m", "-o", "json").stdout), "\n") {
		var ev struct {
			Name   string            `json:"name"`
			Agent  string            `json:"agent"`
			Fields map[string]string `json:"fields"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("egress log line %q: %v", line, err)
		}
		f := ev.Fields
		allowed = allowed || ev.Name == "egress_allowed" && ev.Agent == "dev" && f["Host"] == "git.test" && f["Port"] == "22" && f["Rule"] == "git-ssh"
		denied = denied || ev.Name == "egress_denied" && ev.Agent == "dev" && f["Host"] == "evil.test" && f["Port"] == "22" && f["Rule"] == "no-evil"
	}
	if !allowed || !denied {
		t.Errorf("egress log: allowed git.test:22 %v, denied evil.test:22 %v", allowed, denied)
	}

	// The user's config wins: ProxyCommand none means a direct dial, and
	// an agent has no route out.
	if out, code := execAs(t, id, "0", "sh", "-c", `mkdir -p ~/.ssh && printf 'Host git.test\n    ProxyCommand none\n' > ~/.ssh/config && chmod 600 ~/.ssh/config`); code != 0 {
		t.Fatalf("write ~/.ssh/config: %d %s", code, out)
	}
	if r := ssh("git@git.test hi"); r.code == 0 || strings.Contains(r.stdout, "fakenet ssh") || strings.Contains(r.stdout, "refused the tunnel") {
		t.Errorf("with ProxyCommand none in ~/.ssh/config: want a failed direct dial, got %s", r)
	}
}
