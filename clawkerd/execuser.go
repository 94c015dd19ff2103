package clawkerd

import (
	"os"
	"syscall"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// stageIdentity is who one pipeline stage runs as. cred nil keeps
// clawkerd's own identity (root with its groups); home "" leaves HOME as
// inherited.
type stageIdentity struct {
	cred *syscall.Credential
	home string
}

// identityFor resolves a stage's identity as docker exec does: agent_user
// is the user CMD's user, user a name or uid[:gid] looked up in the
// container's passwd and group files (with supplementary groups), else
// the raw uid/gid of older CPs (no groups, HOME untouched).
func (c *Config) identityFor(st *clawkerdv1.PipeStage) (stageIdentity, error) {
	switch {
	case st.GetAgentUser():
		if u := c.User; u != nil {
			return stageIdentity{cred: credential(u), home: u.Home}, nil
		}
		home := c.RootHome
		if home == "" {
			home = "/root"
		}
		return stageIdentity{home: home}, nil
	case st.GetUser() != "":
		u, err := ResolveUser(st.GetUser(), c.PasswdFile, c.GroupFile)
		if err != nil {
			return stageIdentity{}, err
		}
		return stageIdentity{cred: credential(u), home: u.Home}, nil
	case st.GetUid() != 0 || st.GetGid() != 0:
		return stageIdentity{cred: &syscall.Credential{Uid: st.GetUid(), Gid: st.GetGid(), Groups: []uint32{}}}, nil
	}
	return stageIdentity{}, nil
}

func credential(u *ExecUser) *syscall.Credential {
	groups := make([]uint32, 0, len(u.Sgids))
	for _, g := range u.Sgids {
		groups = append(groups, uint32(g))
	}
	return &syscall.Credential{Uid: uint32(u.Uid), Gid: uint32(u.Gid), Groups: groups}
}

// startWorkdir is clawkerd's cwd at start (the image WORKDIR), reported
// in HelloAck as the default cwd of an exec; "" when unknown.
func startWorkdir() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	return wd
}
