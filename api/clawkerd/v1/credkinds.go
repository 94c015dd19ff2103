package clawkerdv1

import (
	"fmt"
	"strings"

	"github.com/clawker/clawker/internal/consts"
)

// Credential kind names (see consts.CredNameSSHAgent).
const (
	CredNameSSHAgent = consts.CredNameSSHAgent
	CredNameGit      = consts.CredNameGit
)

// ParseCredKinds maps "ssh_agent,git" to kinds; an unknown name is an
// error, so a typo never silently means no forwarding.
func ParseCredKinds(v string) ([]CredKind, error) {
	var out []CredKind
	for _, f := range strings.Split(v, ",") {
		switch strings.TrimSpace(f) {
		case "":
		case CredNameSSHAgent:
			out = append(out, CredKind_CRED_KIND_SSH_AGENT)
		case CredNameGit:
			out = append(out, CredKind_CRED_KIND_GIT)
		default:
			return nil, fmt.Errorf("unknown credential kind %q", f)
		}
	}
	return out, nil
}
