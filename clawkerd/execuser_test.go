package clawkerd

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// identityScript prints what docker exec parity is about: uid, gid,
// supplementary groups, HOME and cwd.
const identityScript = `echo "$(id -u) $(id -g) [$(id -G)] $HOME $(pwd)"`

func userDB(t *testing.T) (passwd, group string) {
	t.Helper()
	dir := t.TempDir()
	passwd, group = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\nagent:x:65534:65533:agent:/home/agent:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(group, []byte("root:x:0:\nagent:x:65533:\ndocker:x:4242:agent,other\nwheel:x:10:other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return passwd, group
}

// TestExecUserResolvedLikeDockerExec: PipeStage.user and agent_user give
// the stage the user's uid, gid, supplementary groups and HOME, resolved
// from the container's passwd and group files, as docker exec -u does.
func TestExecUserResolvedLikeDockerExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	passwd, group := userDB(t)
	agentUser, err := ResolveUser("agent", passwd, group)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *Config) { c.PasswdFile, c.GroupFile, c.User = passwd, group, agentUser })
	c := ts.session(t)
	if caps := c.hello().GetCapabilities(); !slices.Contains(caps, clawkerdv1.CapExecUser) {
		t.Fatalf("HelloAck capabilities = %v", caps)
	}
	tmp := t.TempDir()
	for _, d := range []string{filepath.Dir(tmp), tmp} { // reachable by the users
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		st   *clawkerdv1.PipeStage
		want string
	}{
		{"agent-user", &clawkerdv1.PipeStage{AgentUser: true, Cwd: tmp}, "65534 65533 [65533 4242] /home/agent " + tmp},
		{"name", &clawkerdv1.PipeStage{User: "agent", Cwd: tmp}, "65534 65533 [65533 4242] /home/agent " + tmp},
		{"uid", &clawkerdv1.PipeStage{User: "65534", Cwd: tmp}, "65534 65533 [65533 4242] /home/agent " + tmp},
		{"uid:gid", &clawkerdv1.PipeStage{User: "65534:10", Cwd: tmp}, "65534 10 [10] /home/agent " + tmp},
		{"name overrides uid", &clawkerdv1.PipeStage{User: "root", Uid: 65534, Gid: 65534, Cwd: tmp}, "0 0 [0] /root " + tmp},
		{"env HOME wins", &clawkerdv1.PipeStage{User: "agent", Cwd: tmp, Env: map[string]string{"HOME": "/x"}}, "65534 65533 [65533 4242] /x " + tmp},
		{"legacy uid/gid", &clawkerdv1.PipeStage{Uid: 65534, Gid: 65534, Cwd: tmp, Env: map[string]string{"HOME": "/h"}}, "65534 65534 [65534] /h " + tmp},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.st.Argv = []string{"sh", "-c", identityScript}
			res := c.run(tc.name, stages(tc.st))
			if res.err != nil || res.done.GetFinalExitCode() != 0 {
				t.Fatalf("run: %+v %s", res.err, res.output)
			}
			if got := trimLines(res.output); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	// An unknown name is refused before anything runs.
	res := c.run("unknown", stages(&clawkerdv1.PipeStage{User: "nosuch", Argv: []string{"true"}}))
	if res.err == nil || res.err.GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED {
		t.Fatalf("unknown user: want SPAWN_FAILED, got %+v done=%v", res.err, res.done)
	}
}

// TestHelloAckWorkdir: the start cwd is reported as the exec default.
func TestHelloAckWorkdir(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Workdir = "/work/dir" })
	if got := ts.session(t).hello().GetWorkdir(); got != "/work/dir" {
		t.Fatalf("HelloAck.workdir = %q", got)
	}
}
