package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv/gitserve"
)

// hostOnCPNet is the host's address on clawker-net: agents cannot reach
// it (their bridges carry no host address), so the test's git servers
// listen there and agents reach them only through the egress gateway.
func hostOnCPNet(t *testing.T) netip.Addr {
	t.Helper()
	res, err := suite.docker.NetworkInspect(context.Background(), consts.NetworkName, mobyclient.NetworkInspectOptions{})
	if err != nil {
		t.Fatalf("inspect %s: %v", consts.NetworkName, err)
	}
	for _, c := range res.Network.IPAM.Config {
		if c.Gateway.Is4() {
			return c.Gateway
		}
	}
	t.Fatalf("%s has no IPv4 gateway", consts.NetworkName)
	return netip.Addr{}
}

// pushScript commits one file and pushes it over ssh and https with
// whatever credentials the agent's environment offers; it prints the
// commit. set -e: the first failing push fails the exec. Both go through
// the egress gateway with no setup of the script's own: https by
// HTTPS_PROXY, ssh by the ProxyCommand clawker run installs in
// /etc/ssh/ssh_config.d (clawkerd proxy-connect).
func pushScript(gw netip.Addr, sshPort, httpsPort int) string {
	host := gw.String()
	return strings.Join([]string{
		"set -e", "rm -rf /tmp/w", "mkdir /tmp/w", "cd /tmp/w",
		"git init -q -b main", "echo hello > f", "git add f",
		"git -c user.name=e2e -c user.email=e2e@example.invalid commit -q -m one",
		"export GIT_TERMINAL_PROMPT=0",
		// Host keys are the user's business, not the tunnel's.
		`export GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"`,
		fmt.Sprintf("git push -q ssh://git@%s/ssh.git main", net.JoinHostPort(host, strconv.Itoa(sshPort))),
		fmt.Sprintf("git -c http.sslCAInfo=/etc/e2e-git-ca.pem push -q https://%s/https.git main", net.JoinHostPort(host, strconv.Itoa(httpsPort))),
		"echo COMMIT=$(git rev-parse HEAD)",
	}, "\n")
}

// TestCredentialForwardingGitPush: an agent whose project opted in
// (credentials: {ssh_agent: true, git: true}) pushes to an ssh and an
// https git server with the host's ssh-agent key and the host's git
// credential, relayed agent → clawkerd → Session → CP → host; afterwards
// no file in the agent holds the token or a private key. An agent that
// did not opt in gets neither.
func TestCredentialForwardingGitPush(t *testing.T) {
	e := newEnv(t)
	importGitImage(t)
	agentSock, pub := gitserve.HostSSHAgent(t)
	t.Setenv("SSH_AUTH_SOCK", agentSock)
	hostDir := t.TempDir()
	credFile := filepath.Join(hostDir, "git-credentials")
	gitCfg := filepath.Join(hostDir, "gitconfig")
	if err := os.WriteFile(gitCfg, []byte("[credential]\n\thelper = store --file="+credFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", gitCfg) // inherited by cp up's credential server
	e.must("init")
	e.must("cp", "up", "--wait", "90s")

	dir := writeYAML(t, "credentials: {ssh_agent: true, git: true}\n")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "creds", "--agent", "pusher", "--project-dir", dir, gitImage, "sleep", "3600").stdout)
	plain := strings.TrimSpace(e.must("run", "-d", "--project", "creds", "--agent", "plain", gitImage, "sleep", "3600").stdout)
	waitInit(t, e, id)
	waitInit(t, e, plain)

	const user, token = "pusher", "tok-5c1e9a7d3b-e2e-https-secret"
	gw := hostOnCPNet(t)
	repos := t.TempDir()
	sshRepo, httpsRepo := gitserve.BareRepo(t, repos, "ssh.git"), gitserve.BareRepo(t, repos, "https.git")
	sshPort, sshAccepted := gitserve.SSHGitServer(t, net.JoinHostPort(gw.String(), "0"), pub, repos)
	httpsPort, caPEM, authorized := gitserve.HTTPSGitServer(t, net.JoinHostPort(gw.String(), "0"), gw, repos, user, token)
	cred := fmt.Sprintf("https://%s:%s@%s\n", user, token, net.JoinHostPort(gw.String(), strconv.Itoa(httpsPort)))
	if err := os.WriteFile(credFile, []byte(cred), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := execAs(t, id, "0", "sh", "-c", `printf %s "$1" > /etc/e2e-git-ca.pem`, "sh", string(caPEM)); code != 0 {
		t.Fatalf("install CA: %d %s", code, out)
	}

	// The agent's https goes through the egress gateway: the test server is
	// a host the policy does not know, so the user allows it for a while.
	for _, port := range []int{sshPort, httpsPort} {
		e.must("egress", "allow", "--project", "creds", "--agent", "pusher", "--for", "10m", net.JoinHostPort(gw.String(), strconv.Itoa(port)))
	}
	r := e.clawker("exec", "--project", "creds", "pusher", "--", "sh", "-c", pushScript(gw, sshPort, httpsPort))
	if r.code != 0 {
		t.Fatalf("push from the opted-in agent: %s\nCP log:\n%s", r, e.clawker("cp", "logs").stdout)
	}
	_, commit, _ := strings.Cut(r.stdout, "COMMIT=")
	commit = strings.TrimSpace(commit)
	if len(commit) != 40 || gitserve.HeadOf(t, sshRepo) != commit || gitserve.HeadOf(t, httpsRepo) != commit {
		t.Fatalf("pushed %q; ssh repo at %q, https repo at %q", commit, gitserve.HeadOf(t, sshRepo), gitserve.HeadOf(t, httpsRepo))
	}
	if sshAccepted.Load() == 0 || authorized.Load() == 0 {
		t.Fatalf("servers saw no authenticated push: ssh %d, https %d", sshAccepted.Load(), authorized.Load())
	}

	// No key or token file anywhere in the agent: every file on every
	// mount but the pseudo filesystems. Binaries (which carry PEM labels
	// in their parsers) and the agent's own mTLS key (clawkerd's identity
	// to the CP, root-only, not a forwarded credential) are searched for
	// the token only.
	search := `awk '$3!~/^(proc|sysfs|devpts|mqueue|cgroup2?)$/ {print $2}' /proc/mounts | sort -u |
while read m; do find "$m" -xdev -type f 2>/dev/null; done | sort -u > /tmp/files
while read f; do
  grep -qF "$1" "$f" 2>/dev/null && echo "TOKEN:$f"
  case "$f" in /usr/*|/lib/*|/lib64/*|/bin/*|/run/clawker/bin/*|/proc/*|/run/clawker/bootstrap/key.pem) ;; *) grep -qF -e "PRIVATE KEY" -e "$2" "$f" 2>/dev/null && echo "KEY:$f" ;; esac
done < /tmp/files
find / -xdev -name 'id_*' 2>/dev/null | sed 's/^/IDFILE:/'
echo SEARCHED=$(wc -l < /tmp/files)`
	pubB64 := strings.Fields(string(gitserve.AuthorizedKey(pub)))[1]
	out, code := execAs(t, id, "0", "sh", "-c", search, "sh", token, pubB64)
	if code != 0 || !strings.Contains(out, "SEARCHED=") || strings.Contains(out, "TOKEN:") || strings.Contains(out, "KEY:") || strings.Contains(out, "IDFILE:") {
		t.Fatalf("filesystem search (exit %d):\n%s", code, out)
	}
	t.Logf("searched the agent's files: %s", out[strings.LastIndex(out, "SEARCHED="):])
	if env := strings.Join(inspectCtr(t, id).Container.Config.Env, "\n"); strings.Contains(env, token) {
		t.Errorf("token in docker inspect Env")
	}

	// The agent that did not opt in: same servers, same host credentials,
	// and both pushes fail (no socket, no helper; the CP would refuse too).
	sshBefore, httpsBefore := sshAccepted.Load(), authorized.Load()
	if out, code := execAs(t, plain, "0", "sh", "-c", `printf %s "$1" > /etc/e2e-git-ca.pem`, "sh", string(caPEM)); code != 0 {
		t.Fatalf("install CA: %d %s", code, out)
	}
	// Same egress grant, so only the missing credentials stop it.
	for _, port := range []int{sshPort, httpsPort} {
		e.must("egress", "allow", "--project", "creds", "--agent", "plain", "--for", "10m", net.JoinHostPort(gw.String(), strconv.Itoa(port)))
	}
	for _, script := range []string{
		strings.Replace(pushScript(gw, sshPort, httpsPort), "git -c http.sslCAInfo", "true git -c http.sslCAInfo", 1), // ssh only
		strings.Replace(pushScript(gw, sshPort, httpsPort), "git push -q ssh", "true git push -q ssh", 1),             // https only
	} {
		if r := e.clawker("exec", "--project", "creds", "plain", "--", "sh", "-c", script); r.code == 0 {
			t.Errorf("push from the agent without credentials succeeded: %s", r)
		}
	}
	if sshAccepted.Load() != sshBefore || authorized.Load() != httpsBefore {
		t.Errorf("a server authenticated the agent without credentials: ssh %d→%d, https %d→%d",
			sshBefore, sshAccepted.Load(), httpsBefore, authorized.Load())
	}
}
