package egress

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/clawker/clawker/internal/egress/policy"
	"github.com/clawker/clawker/internal/logger"
)

// globalKey names the policy file of global (project-less) agents; it
// cannot collide with a project slug (slugs have no underscore prefix).
const globalKey = "_global"

// store holds each project's compiled policy. A project nobody has pushed
// a policy for gets the built-in defaults. Policies are persisted as the
// YAML the CLI sent, so a CP restart keeps them.
type store struct {
	dir string // "" keeps policies in memory only
	log *logger.Logger

	mu       sync.RWMutex
	matchers map[string]*policy.Matcher
	fallback *policy.Matcher
}

func newStore(dir string, log *logger.Logger) (*store, error) {
	log = logger.OrNop(log)
	fb, err := policy.Compile(policy.Policy{})
	if err != nil {
		return nil, fmt.Errorf("compile default egress policy: %w", err)
	}
	s := &store{dir: dir, log: log, matchers: map[string]*policy.Matcher{}, fallback: fb}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("egress policy dir: %w", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		key := filepath.Base(f[:len(f)-len(".yaml")])
		if err == nil {
			_, err = s.set(key, data, false)
		}
		if err != nil {
			// A broken file denies that project's egress (no fallback to
			// defaults): fail closed, say why.
			s.matchers[key] = nil
			log.Error().Str("event", "egress_policy_unreadable").Str("file", f).Err(err).Msg("project egress denied until its policy is reloaded")
		}
	}
	return s, nil
}

// Matcher implements gateway.PolicySource.
func (s *store) Matcher(project string) *policy.Matcher {
	key := keyOf(project)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if m, ok := s.matchers[key]; ok {
		return m
	}
	return s.fallback
}

func keyOf(project string) string {
	if project == "" {
		return globalKey
	}
	return project
}

// set parses, compiles and installs a project's policy; persist writes it
// first, so what is enforced is what a restart loads.
func (s *store) set(key string, data []byte, persist bool) (policy.Policy, error) {
	p, err := policy.Parse(data)
	if err != nil {
		return policy.Policy{}, err
	}
	m, err := policy.Compile(p)
	if err != nil {
		return policy.Policy{}, err
	}
	if persist && s.dir != "" {
		if err := writeAtomic(filepath.Join(s.dir, key+".yaml"), data); err != nil {
			return policy.Policy{}, err
		}
	}
	s.mu.Lock()
	s.matchers[key] = m
	s.mu.Unlock()
	return p, nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("rename %s: %w", tmp, err), os.Remove(tmp))
	}
	return nil
}
