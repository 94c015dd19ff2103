package clawkerd

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/agent"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

var bothKinds = []clawkerdv1.CredKind{clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, clawkerdv1.CredKind_CRED_KIND_GIT}

// credServer runs clawkerd with both credential sockets in a short dir.
func credServer(t *testing.T) (*testServer, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ckd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ts := startServer(t, func(c *Config) { c.Credentials, c.CredSocketDir = bothKinds, dir })
	eventually(t, 5*time.Second, "sockets", func() bool {
		_, e1 := os.Stat(filepath.Join(dir, sshAgentSocketName))
		_, e2 := os.Stat(filepath.Join(dir, gitCredSocketName))
		return e1 == nil && e2 == nil
	})
	return ts, dir
}

func sshList(t *testing.T, dir string) ([]*agent.Key, error) {
	t.Helper()
	conn, err := dialUnix(filepath.Join(dir, sshAgentSocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return agent.NewClient(conn).List()
}

// TestCredRelaySSHAgent: an ssh-agent request on the in-agent socket is
// refused locally until the CP sends CredEnable, then goes to the CP as a
// CredRequest and its CredReply comes back to the client; a refusal is
// SSH_AGENT_FAILURE.
func TestCredRelaySSHAgent(t *testing.T) {
	ts, dir := credServer(t)
	c := ts.session(t)
	defer c.close()
	c.hello()
	if _, err := sshList(t, dir); err == nil {
		t.Fatal("list answered before CredEnable")
	}
	c.send(&clawkerdv1.Command{CommandId: "cred-enable", Payload: &clawkerdv1.Command_CredEnable{CredEnable: &clawkerdv1.CredEnable{Kinds: bothKinds}}})
	c.hello()               // dispatch is in order: CredEnable is in effect now
	c.noMore("cred-enable") // never replied to

	type res struct {
		keys []*agent.Key
		err  error
	}
	got := make(chan res, 1)
	go func() { k, err := sshList(t, dir); got <- res{k, err} }()
	req := c.next("cred/1").GetCredRequest()
	if req.GetKind() != clawkerdv1.CredKind_CRED_KIND_SSH_AGENT || !bytes.Equal(req.GetData(), []byte{11}) {
		t.Fatalf("request: %v", req)
	}
	// SSH_AGENT_IDENTITIES_ANSWER with no keys.
	c.send(&clawkerdv1.Command{CommandId: "cred/1", Payload: &clawkerdv1.Command_CredReply{CredReply: &clawkerdv1.CredReply{Ok: true, Data: []byte{12, 0, 0, 0, 0}}}})
	if r := <-got; r.err != nil || len(r.keys) != 0 {
		t.Fatalf("list: %v %v", r.keys, r.err)
	}

	go func() { k, err := sshList(t, dir); got <- res{k, err} }()
	c.next("cred/2")
	c.send(&clawkerdv1.Command{CommandId: "cred/2", Payload: &clawkerdv1.Command_CredReply{CredReply: &clawkerdv1.CredReply{}}})
	if r := <-got; r.err == nil {
		t.Fatal("refused request answered")
	}

	// The Session ends: a question in flight fails, later ones are refused locally.
	go func() { k, err := sshList(t, dir); got <- res{k, err} }()
	c.next("cred/3")
	c.close()
	if r := <-got; r.err == nil {
		t.Fatal("answered after the session ended")
	}
}

// TestCredRelayGitHelper: `clawkerd credential get` relays git's request
// and prints the CP's answer; store/erase keep nothing; refused = empty.
func TestCredRelayGitHelper(t *testing.T) {
	ts, dir := credServer(t)
	c := ts.session(t)
	defer c.close()
	c.hello()
	c.send(&clawkerdv1.Command{CommandId: "cred-enable", Payload: &clawkerdv1.Command_CredEnable{CredEnable: &clawkerdv1.CredEnable{Kinds: bothKinds}}})
	c.hello()
	getenv := func(k string) string {
		if k == EnvGitCredSocket {
			return filepath.Join(dir, gitCredSocketName)
		}
		return ""
	}
	helper := func(op, in string) chan string {
		out := make(chan string, 1)
		go func() {
			var b, e bytes.Buffer
			if code := CredentialHelper([]string{op}, strings.NewReader(in), &b, &e, getenv); code != 0 {
				out <- "exit"
				return
			}
			out <- b.String()
		}()
		return out
	}
	const req = "protocol=https\nhost=git.example\n\n"
	out := helper("get", req)
	r := c.next("cred/1").GetCredRequest()
	if r.GetKind() != clawkerdv1.CredKind_CRED_KIND_GIT || string(r.GetData()) != req {
		t.Fatalf("request: %v", r)
	}
	c.send(&clawkerdv1.Command{CommandId: "cred/1", Payload: &clawkerdv1.Command_CredReply{CredReply: &clawkerdv1.CredReply{Ok: true, Data: []byte("username=u\npassword=p\n")}}})
	if got := <-out; got != "username=u\npassword=p\n" {
		t.Fatalf("helper printed %q", got)
	}
	if got := <-helper("store", req+"username=u\npassword=p\n"); got != "" {
		t.Fatalf("store printed %q", got)
	}
	c.noMore("cred/2") // store was not relayed
	out = helper("get", req)
	c.next("cred/2")
	c.send(&clawkerdv1.Command{CommandId: "cred/2", Payload: &clawkerdv1.Command_CredReply{CredReply: &clawkerdv1.CredReply{}}})
	if got := <-out; got != "" {
		t.Fatalf("refused get printed %q", got)
	}
}

func TestCredEnv(t *testing.T) {
	env := credEnv("/run/clawker/creds", "/run/clawker/bin/clawkerd", bothKinds, func(k string) string {
		if k == "GIT_CONFIG_COUNT" {
			return "2"
		}
		return ""
	})
	want := map[string]string{
		"SSH_AUTH_SOCK":      "/run/clawker/creds/ssh-agent.sock",
		"GIT_CONFIG_COUNT":   "3",
		"GIT_CONFIG_KEY_2":   "credential.helper",
		"GIT_CONFIG_VALUE_2": "/run/clawker/bin/clawkerd credential",
		EnvGitCredSocket:     "/run/clawker/creds/git-credential.sock",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}
	if len(env) != len(want) {
		t.Errorf("env %v", env)
	}
}

func dialUnix(path string) (*net.UnixConn, error) {
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
}
