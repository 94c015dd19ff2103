package daemon

import (
	"errors"
	"fmt"
	"maps"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// errExecUserName: an older clawkerd cannot resolve names in the container.
var errExecUserName = errors.New("this agent's clawkerd cannot resolve user names (recreate the agent to update it): give a numeric uid[:gid]")

// errExecNoAgentUser: an older clawkerd whose HelloAck names no user. Its
// default would be root, not the agent's user: refuse unless -u is given.
var errExecNoAgentUser = errors.New("this agent's clawkerd does not report the agent's user (recreate the agent to update it): give -u explicitly")

// execStage builds the exec's one stage with docker exec's defaults: the
// agent's user (CLAWKER_USER, else the image USER) with its HOME and
// supplementary groups, in the image WORKDIR. -u and -w override them.
// ack is the Session's HelloAck; nil is treated as an older clawkerd.
func execStage(start *adminv1.ExecStart, ack *clawkerdv1.HelloAck) (*clawkerdv1.PipeStage, error) {
	st := &clawkerdv1.PipeStage{Argv: start.GetArgv(), Cwd: start.GetCwd(), Env: start.GetEnv()}
	if st.Cwd == "" {
		st.Cwd = ack.GetWorkdir()
	}
	if st.Cwd == "" {
		st.Cwd = "/"
	}
	user := start.GetUser()
	if clawkerdv1.HasCapability(ack, clawkerdv1.CapExecUser) {
		// clawkerd resolves the user against the container's own passwd
		// and group files, groups and HOME included.
		if user == "" {
			st.AgentUser = true
		} else {
			st.User = user
		}
		return st, nil
	}
	// Older clawkerd: numbers only, no supplementary groups; HOME from
	// HelloAck for the agent's own user.
	home := ""
	switch {
	case user == "" && ack.GetUser() != nil:
		st.Uid, st.Gid, home = ack.GetUser().GetUid(), ack.GetUser().GetGid(), ack.GetUser().GetHome()
	case user == "":
		return nil, errExecNoAgentUser
	default:
		uid, gid, err := parseUser(user)
		if err != nil {
			return nil, fmt.Errorf("%w (%v)", errExecUserName, err)
		}
		st.Uid, st.Gid = uid, gid
	}
	if _, set := st.Env["HOME"]; home != "" && !set {
		st.Env = maps.Clone(st.Env)
		if st.Env == nil {
			st.Env = map[string]string{}
		}
		st.Env["HOME"] = home
	}
	return st, nil
}
