package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/agentnet"
	"github.com/clawker/clawker/internal/consts"
)

const egressPolicy = `egress:
  defaults: false
  allow:
    - {name: web, host: allowed.test, ports: [443]}
    - {name: ssh, host: git.test, ports: [22]}
    - {name: api-read, host: api.test, ports: [80], methods: [GET], paths: [/v1/]}
    - {name: icp-read, host: icp.test, ports: [443], intercept: true, methods: [GET], paths: [/v1/]}
    - {name: ws-chat, host: ws.test, ports: [80], paths: [/chat/], websocket: true}
    - {name: ws-plain, host: ws.test, ports: [80], paths: [/plain/]}
    - {name: wss-chat, host: wss.test, ports: [443], intercept: true, paths: [/chat/], websocket: true}
    - {name: wss-plain, host: wss.test, ports: [443], intercept: true, paths: [/plain/]}
  deny:
    - {name: no-evil, host: evil.test}
`

// TestEgressPolicy (issue 18) proves the egress gateway on the real
// engine: an agent on its internal network reaches the fake internet only
// through the CP's gateway and only where its project's policy allows;
// reloads, timed grants and egress-block apply to the running agent and
// survive a CP restart; an
// impostor with agent labels and an agent without proxy settings get
// nothing out; with the gateway stopped nothing gets out.
func TestEgressPolicy(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	bin := buildFakenet(t)
	fake := startFakeInternet(t, bin)
	fakeCA := containerFile(t, fake, fakeDir+"/ca.pem")
	t.Setenv("CLAWKER_CP_EGRESS_UPSTREAM_DNS", netip.AddrPortFrom(fakeIP, 53).String())
	// Intercepted upstreams are verified: the gateway trusts the fake CA.
	t.Setenv("CLAWKER_CP_EGRESS_UPSTREAM_CA", string(fakeCA))
	e.must("cp", "up", "--wait", "90s")
	connectCPToFakeNet(t)

	const project = "eg"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "clawker.yaml"), []byte(egressPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(e.must("run", "-d", "--project", project, "--agent", "a1", "--project-dir", dir, agentImage, "sleep", "3600").stdout)
	eventually(t, 90*time.Second, "a1 trusted", func() error {
		if r, ok := findAgent(e.agents(), id); !ok || !r.Trusted {
			return fmt.Errorf("%+v", r)
		}
		return nil
	})
	plantFakenet(t, id, bin, fakeCA)
	cp := cpAddrOn(t, project, "a1")
	proxy := netip.AddrPortFrom(cp, consts.PortEgressProxy).String()
	ok := func(what string, args ...string) {
		t.Helper()
		if out, good := fakenet(t, id, args...); !good {
			t.Errorf("%s: want success, got %s", what, out)
		}
	}
	fails := func(what string, args ...string) string {
		t.Helper()
		out, good := fakenet(t, id, args...)
		if good {
			t.Errorf("%s: want failure, got %s", what, out)
		}
		return out
	}

	// Allowed: HTTPS by name (SNI checked, not intercepted), ssh on 22
	// (CONNECT by hand here; TestEgressPlainSSH runs a real ssh client).
	ok("https allowed.test", "get", "https://allowed.test/")
	ok("ssh git.test:22 via CONNECT", "connect", "-proxy", proxy, "-target", "git.test:22")
	// Method and path rule (plain HTTP: the gateway sees each request).
	ok("GET /v1/", "get", "http://api.test/v1/items")
	if out := fails("POST /v1/", "get", "-X", "POST", "http://api.test/v1/items"); !strings.Contains(out, "403") {
		t.Errorf("POST: want 403, got %s", out)
	}
	fails("GET /v2/", "get", "http://api.test/v2/items")
	// Denied host: via the proxy, by direct DNS (gateway and fake server),
	// by raw IP (direct and through the proxy), over UDP.
	fails("https evil.test", "get", "https://evil.test/")
	fails("https other.test (no rule)", "get", "https://other.test/")
	fails("gateway DNS evil.test", "dns", "-server", netip.AddrPortFrom(cp, 53).String(), "evil.test")
	ok("gateway DNS allowed.test", "dns", "-server", netip.AddrPortFrom(cp, 53).String(), "allowed.test")
	fails("UDP DNS straight to the fake internet", "dns", "-server", netip.AddrPortFrom(fakeIP, 53).String(), "allowed.test")
	fails("raw IP TCP", "tcp", netip.AddrPortFrom(fakeIP, 443).String())
	fails("raw IP via proxy", "connect", "-proxy", proxy, "-target", netip.AddrPortFrom(fakeIP, 22).String())
	fails("IPv6 literal via proxy", "connect", "-proxy", proxy, "-target", "[2001:db8::1]:22")
	// CONNECT to an allowed name carrying a denied SNI is cut; the same
	// tunnel with the matching SNI is the control.
	ok("CONNECT allowed.test, SNI allowed.test", "connect", "-proxy", proxy, "-target", "allowed.test:443", "-sni", "allowed.test")
	fails("CONNECT allowed.test, SNI evil.test", "connect", "-proxy", proxy, "-target", "allowed.test:443", "-sni", "evil.test")
	checkInterceptAndWebSocket(t, ok, fails)
	// Without the proxy variables nothing gets out, even to an allowed name.
	fails("no proxy", "get", "-noproxy", "https://allowed.test/")

	// Reload: other.test becomes allowed; the very next request sees it.
	reloaded := strings.Replace(egressPolicy, "  deny:", "    - {name: other, host: other.test, ports: [443]}\n  deny:", 1)
	if err := os.WriteFile(filepath.Join(dir, "clawker.yaml"), []byte(reloaded), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("egress", "reload", "--project", project, "--project-dir", dir)
	start := time.Now()
	ok("other.test after reload", "get", "https://other.test/")
	if d := time.Since(start); d > time.Second {
		t.Errorf("first request after reload took %v", d)
	}

	// A timed grant works, then expires by itself (audited both ways).
	fails("grant.test before grant", "get", "https://grant.test/")
	e.must("egress", "allow", "--project", project, "--agent", "a1", "--for", "3s", "grant.test:443", "--reason", "e2e")
	ok("grant.test with grant", "get", "https://grant.test/")
	eventually(t, 10*time.Second, "grant expired", func() error {
		if out, good := fakenet(t, id, "get", "https://grant.test/"); good {
			return fmt.Errorf("still allowed: %s", out)
		}
		return nil
	})

	// egress-block cuts the agent's egress; its Session stays connected.
	e.must("contain", "--project", project, "a1", "--action", "egress-block", "--reason", "e2e")
	fails("allowed.test while blocked", "get", "https://allowed.test/")
	if r, _ := findAgent(e.agents(), id); r.Session != "connected" {
		t.Errorf("egress-block detached the Session: %+v", r)
	}
	e.must("contain", "--project", project, "a1", "--action", "egress-unblock")
	ok("allowed.test after unblock", "get", "https://allowed.test/")

	// An impostor with a1's labels on a1's network gets nothing.
	imp := startHostile(t, "clawker-e2e-egress-impostor", map[string]string{consts.LabelPurpose: consts.PurposeAgent,
		consts.LabelProject: project, consts.LabelAgent: "a1"})
	joinAgentNet(t, imp, project, "a1", false)
	plantFakenet(t, imp, bin, fakeCA)
	if out, good := fakenet(t, imp, "connect", "-proxy", proxy, "-target", "allowed.test:443"); good || !strings.Contains(out, "403") {
		t.Errorf("impostor via proxy: want 403, got %s", out)
	}

	// Every decision is attributed and audited: log, events, metrics.
	checkEgressAudit(t, e, project)

	// A block and a timed grant survive a CP restart (a new CP container).
	e.must("egress", "allow", "--project", project, "--agent", "a1", "--for", "10m", "grant.test:443", "--reason", "e2e")
	e.must("contain", "--project", project, "a1", "--action", "egress-block", "--reason", "e2e")
	e.must("cp", "down")
	e.must("cp", "up", "--wait", "90s")
	connectCPToFakeNet(t)
	eventually(t, 90*time.Second, "a1 trusted by the new CP", func() error {
		if r, ok := findAgent(e.agents(), id); !ok || !r.Trusted {
			return fmt.Errorf("%+v", r)
		}
		return nil
	})
	fails("allowed.test blocked across the restart", "get", "https://allowed.test/")
	e.must("contain", "--project", project, "a1", "--action", "egress-unblock")
	ok("allowed.test after unblock", "get", "https://allowed.test/")
	ok("grant.test with the grant from before the restart", "get", "https://grant.test/")

	// Gateway down (CP stopped): nothing gets out.
	timeout := 5
	if _, err := suite.docker.ContainerStop(context.Background(), consts.ControlPlaneContainer, mobyclient.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	fails("allowed.test with the gateway stopped", "get", "https://allowed.test/")
	fails("direct with the gateway stopped", "get", "-noproxy", "https://allowed.test/")
}

// checkEgressAudit asserts the decisions are in `egress log` with agent,
// host and rule, and counted in /metrics.
func checkEgressAudit(t *testing.T, e *env, project string) {
	t.Helper()
	var sawDeny, sawAllow, sawGrantEnd bool
	for _, line := range strings.Split(strings.TrimSpace(e.must("egress", "log", "--project", project, "--since", "10m", "-o", "json").stdout), "\n") {
		var ev struct {
			Name   string            `json:"name"`
			Agent  string            `json:"agent"`
			Fields map[string]string `json:"fields"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("egress log line %q: %v", line, err)
		}
		switch {
		case ev.Name == "egress_denied" && ev.Agent == "a1" && ev.Fields["Host"] == "evil.test" && ev.Fields["Rule"] == "no-evil":
			sawDeny = true
		case ev.Name == "egress_allowed" && ev.Agent == "a1" && ev.Fields["Host"] == "api.test" && ev.Fields["Method"] == "GET" && ev.Fields["Rule"] == "api-read":
			sawAllow = true
		case ev.Name == "egress_grant_expired" && ev.Agent == "a1":
			sawGrantEnd = true
		}
	}
	if !sawDeny || !sawAllow || !sawGrantEnd {
		t.Errorf("egress log: denied evil.test %v, allowed GET api.test %v, grant expiry %v", sawDeny, sawAllow, sawGrantEnd)
	}
	if n := cpMetric(t, e, "clawker_cp_egress_decisions_total"); n < 10 {
		t.Errorf("clawker_cp_egress_decisions_total = %v, want >= 10", n)
	}
}

// cpAddrOn is the CP's address on an agent's network (the gateway's).
func cpAddrOn(t *testing.T, project, agent string) netip.Addr {
	t.Helper()
	ep := inspect(t, consts.ControlPlaneNetContainer).NetworkSettings.Networks[agentnet.NameOf(project, agent)]
	if ep == nil || !ep.IPAddress.IsValid() {
		t.Fatalf("CP has no endpoint on %s's network", agent)
	}
	return ep.IPAddress
}
