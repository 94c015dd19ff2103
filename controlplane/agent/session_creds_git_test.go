package agent

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/controlplane/creds"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/gitcred"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/gitserve"
)

type staticLabels map[string]string

func (l staticLabels) ContainerLabels(context.Context, string) (map[string]string, error) {
	return l, nil
}

// TestCredForwardGitPushInProcess is the whole relay without Docker: the
// host's git pushes over ssh and https using only clawkerd's sockets and
// helper, through a real Session, the real CP gate (creds.Broker) and the
// real host sources (an ssh-agent, the git credential server answering
// from a store helper). The container e2e is TestCredentialForwardingGitPush.
func TestCredForwardGitPushInProcess(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh client")
	}
	const user, token = "pusher", "tok-in-process-2f9c"
	agentSock, pub := gitserve.HostSSHAgent(t)
	repos := t.TempDir()
	sshRepo, httpsRepo := gitserve.BareRepo(t, repos, "ssh.git"), gitserve.BareRepo(t, repos, "https.git")
	lo := netip.MustParseAddr("127.0.0.1")
	sshPort, _ := gitserve.SSHGitServer(t, "127.0.0.1:0", pub, repos)
	httpsPort, caPEM, authorized := gitserve.HTTPSGitServer(t, "127.0.0.1:0", lo, repos, user, token)

	// The host side: git credential server with a store helper.
	host := t.TempDir()
	store := filepath.Join(host, "store")
	must(t, os.WriteFile(store, []byte("https://"+user+":"+token+"@127.0.0.1:"+strconv.Itoa(httpsPort)+"\n"), 0o600))
	hostCfg := filepath.Join(host, "gitconfig")
	must(t, os.WriteFile(hostCfg, []byte("[credential]\n\thelper = store --file="+store+"\n"), 0o600))
	t.Setenv("GIT_CONFIG_GLOBAL", hostCfg) // what gitcred.Fill's host git reads
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	sockDir, err := os.MkdirTemp("", "ckh")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	gitSock := filepath.Join(sockDir, "g.sock")
	lis, err := net.Listen("unix", gitSock)
	must(t, err)
	go func() { _ = gitcred.Serve(lis, "git", 10*time.Second, t.Logf) }()
	t.Cleanup(func() { _ = lis.Close() })

	broker := creds.New(staticLabels{consts.LabelPurpose: consts.PurposeAgent, consts.LabelCredentials: "ssh_agent,git"},
		creds.Sources{SSHAgentSock: agentSock, GitCredSock: gitSock}, logger.Nop())
	credDir, err := os.MkdirTemp("", "ckd")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(credDir) })
	env := newDTEnv(t, nil, WithCredentials(broker))
	id := dtContainerID(t)
	startRealClawkerdWith(t, env, id, func(c *clawkerd.Config) {
		c.Credentials = []clawkerdv1.CredKind{clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, clawkerdv1.CredKind_CRED_KIND_GIT}
		c.CredSocketDir = credDir
	})
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool { s := env.dialer.Sessions(); return len(s) == 1 && s[0].Ready })

	// The "agent": a git with no credentials of its own.
	work := t.TempDir()
	self, err := os.Executable()
	must(t, err)
	ca := filepath.Join(work, "ca.pem")
	must(t, os.WriteFile(ca, caPEM, 0o600))
	empty := filepath.Join(work, "empty-gitconfig")
	must(t, os.WriteFile(empty, nil, 0o600))
	agentEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + empty,
		"GIT_TERMINAL_PROMPT=0", "SSH_AUTH_SOCK=" + filepath.Join(credDir, "ssh-agent.sock"),
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=credential.helper", "GIT_CONFIG_VALUE_0=" + self + " credential",
		clawkerd.EnvGitCredSocket + "=" + filepath.Join(credDir, "git-credential.sock"),
		`GIT_SSH_COMMAND=ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes`}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = work, agentEnv
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q", "-b", "main", ".")
	must(t, os.WriteFile(filepath.Join(work, "f"), []byte("hello\n"), 0o600))
	run("add", "f")
	run("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "one")
	commit := run("rev-parse", "HEAD")
	run("push", "-q", "ssh://git@127.0.0.1:"+strconv.Itoa(sshPort)+"/ssh.git", "main")
	run("-c", "http.sslCAInfo="+ca, "push", "-q", "https://127.0.0.1:"+strconv.Itoa(httpsPort)+"/https.git", "main")
	if gitserve.HeadOf(t, sshRepo) != commit || gitserve.HeadOf(t, httpsRepo) != commit || authorized.Load() == 0 {
		t.Fatalf("pushed %s; ssh repo %q, https repo %q, authorized %d", commit, gitserve.HeadOf(t, sshRepo), gitserve.HeadOf(t, httpsRepo), authorized.Load())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
