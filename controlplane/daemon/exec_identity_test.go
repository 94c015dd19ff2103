package daemon

import (
	"errors"
	"testing"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func TestExecStageDefaults(t *testing.T) {
	capable := &clawkerdv1.HelloAck{Capabilities: []string{clawkerdv1.CapExecUser}, Workdir: "/app",
		User: &clawkerdv1.ResolvedUser{Uid: 1000, Gid: 1000, Home: "/home/dev"}}
	old := &clawkerdv1.HelloAck{User: &clawkerdv1.ResolvedUser{Uid: 1000, Gid: 1001, Home: "/home/dev"}}
	cases := []struct {
		name        string
		user, cwd   string
		ack         *clawkerdv1.HelloAck
		want        *clawkerdv1.PipeStage
		wantNameErr bool
		wantErr     error
	}{
		{"default is the agent user in WORKDIR", "", "", capable, &clawkerdv1.PipeStage{AgentUser: true, Cwd: "/app"}, false, nil},
		{"-u name, -w", "alice", "/tmp", capable, &clawkerdv1.PipeStage{User: "alice", Cwd: "/tmp"}, false, nil},
		{"-u uid:gid", "5:6", "", capable, &clawkerdv1.PipeStage{User: "5:6", Cwd: "/app"}, false, nil},
		{"old clawkerd default", "", "", old, &clawkerdv1.PipeStage{Uid: 1000, Gid: 1001, Cwd: "/",
			Env: map[string]string{"HOME": "/home/dev"}}, false, nil},
		{"old clawkerd numeric", "7:8", "/w", old, &clawkerdv1.PipeStage{Uid: 7, Gid: 8, Cwd: "/w"}, false, nil},
		{"old clawkerd name", "alice", "", old, nil, true, nil},
		// Without a user in the HelloAck the default would silently be root.
		{"old clawkerd without user", "", "", &clawkerdv1.HelloAck{}, nil, false, errExecNoAgentUser},
		{"no session ack", "", "", nil, nil, false, errExecNoAgentUser},
		{"old clawkerd without user, explicit -u root", "root", "", &clawkerdv1.HelloAck{}, &clawkerdv1.PipeStage{Cwd: "/"}, false, nil},
		{"old clawkerd without user, explicit -u 0", "0", "", &clawkerdv1.HelloAck{}, &clawkerdv1.PipeStage{Cwd: "/"}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := execStage(&adminv1.ExecStart{User: tc.user, Cwd: tc.cwd}, tc.ack)
			if tc.wantNameErr {
				if !errors.Is(err, errExecUserName) {
					t.Fatalf("want errExecUserName, got %v", err)
				}
				return
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("want %v, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.GetAgentUser() != tc.want.GetAgentUser() || got.GetUser() != tc.want.GetUser() ||
				got.GetUid() != tc.want.GetUid() || got.GetGid() != tc.want.GetGid() ||
				got.GetCwd() != tc.want.GetCwd() || got.GetEnv()["HOME"] != tc.want.GetEnv()["HOME"] {
				t.Fatalf("stage = %+v, want %+v", got, tc.want)
			}
		})
	}
	// The caller's env map is not written to.
	env := map[string]string{"A": "1"}
	if _, err := execStage(&adminv1.ExecStart{Env: env}, old); err != nil || len(env) != 1 {
		t.Fatalf("caller env mutated: %v %v", env, err)
	}
}
