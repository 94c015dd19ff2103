package cli

import (
	"regexp"
	"sync"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// hexID is compiled on first use, not at every CLI start.
var hexID = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{12,64}$`) })

// agentRef turns the AGENT argument into an AdminService reference: a
// container ID (or unique prefix of at least 12 hex digits) when no
// project is given and it looks like one, else a validated agent name.
func agentRef(project, arg string) (*adminv1.AgentRef, error) {
	if project == "" && hexID().MatchString(arg) {
		return &adminv1.AgentRef{ContainerId: arg}, nil
	}
	ps, an, err := agentIdentity(project, arg)
	if err != nil {
		return nil, err
	}
	return &adminv1.AgentRef{Agent: an.String(), Project: ps.String()}, nil
}
