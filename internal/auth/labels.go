package auth

import "github.com/clawker/clawker/internal/consts"

// LabelIdentity returns a container's agent and project labels when they
// are valid names (internal/auth rules), each "" otherwise. Labels are set
// by whoever created the container: an invalid one must not reach an
// event, the worldview or the operator's terminal.
func LabelIdentity(labels map[string]string) (agentName, project string) {
	if a, err := NewAgentName(labels[consts.LabelAgent]); err == nil {
		agentName = a.String()
	}
	if p, err := NewProjectSlug(labels[consts.LabelProject]); err == nil {
		project = p.String()
	}
	return agentName, project
}
