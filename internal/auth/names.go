package auth

import (
	"errors"
	"fmt"
	"strings"
)

// maxNameLen bounds agent and project names so that the composed
// AgentFullName stays a valid Docker container name and URI SAN.
const maxNameLen = 63

var (
	// ErrEmptyAgentName is returned by NewAgentName for "".
	ErrEmptyAgentName = errors.New("agent name is empty")
	// ErrInvalidName is wrapped by the name validators for bad input.
	ErrInvalidName = errors.New("invalid name")
)

// AgentName is a validated agent short name. The zero value is invalid and
// never produced by NewAgentName.
type AgentName struct{ s string }

// ProjectSlug is a validated project slug. The zero value is the global
// (project-less) scope.
type ProjectSlug struct{ s string }

// NewAgentName validates s: 1..63 chars of [a-z0-9_-], starting with a
// letter or digit. Dots are refused because they separate the segments of
// an AgentFullName, so allowing them would make two identities collide.
func NewAgentName(s string) (AgentName, error) {
	if s == "" {
		return AgentName{}, ErrEmptyAgentName
	}
	if err := validateName(s); err != nil {
		return AgentName{}, fmt.Errorf("agent name %q: %w", s, err)
	}
	return AgentName{s: s}, nil
}

// NewProjectSlug validates s with the same rules as NewAgentName, except
// that "" is accepted and yields the zero (global) slug.
func NewProjectSlug(s string) (ProjectSlug, error) {
	if s == "" {
		return ProjectSlug{}, nil
	}
	if err := validateName(s); err != nil {
		return ProjectSlug{}, fmt.Errorf("project %q: %w", s, err)
	}
	return ProjectSlug{s: s}, nil
}

func validateName(s string) error {
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidName, maxNameLen)
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case (r == '-' || r == '_') && i > 0:
		default:
			return fmt.Errorf("%w: use lowercase letters, digits, '-' and '_' (not leading)", ErrInvalidName)
		}
	}
	return nil
}

func (a AgentName) String() string   { return a.s }
func (a AgentName) IsZero() bool     { return a.s == "" }
func (p ProjectSlug) String() string { return p.s }
func (p ProjectSlug) IsZero() bool   { return p.s == "" }

// AgentFullName is `clawker.<project>.<agent>`, or `clawker.<agent>` for a
// global agent.
func AgentFullName(p ProjectSlug, a AgentName) string {
	if p.IsZero() {
		return "clawker." + a.s
	}
	return "clawker." + p.s + "." + a.s
}

// ParseAgentFullName splits an AgentFullName back into its typed parts.
func ParseAgentFullName(full string) (ProjectSlug, AgentName, error) {
	rest, ok := strings.CutPrefix(full, "clawker.")
	if !ok {
		return ProjectSlug{}, AgentName{}, fmt.Errorf("%w: %q lacks the clawker. prefix", ErrInvalidName, full)
	}
	parts := strings.Split(rest, ".")
	var ps, as string
	switch len(parts) {
	case 1:
		as = parts[0]
	case 2:
		ps, as = parts[0], parts[1]
		if ps == "" {
			return ProjectSlug{}, AgentName{}, fmt.Errorf("%w: empty project in %q", ErrInvalidName, full)
		}
	default:
		return ProjectSlug{}, AgentName{}, fmt.Errorf("%w: %q has too many segments", ErrInvalidName, full)
	}
	p, err := NewProjectSlug(ps)
	if err != nil {
		return ProjectSlug{}, AgentName{}, err
	}
	a, err := NewAgentName(as)
	if err != nil {
		return ProjectSlug{}, AgentName{}, err
	}
	return p, a, nil
}
