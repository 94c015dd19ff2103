package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Clock is the time source of a GrantSet; tests inject a fake.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Grant is one timed bypass: Agent may reach Host (a pattern like a
// rule's host) on Port (0: any) until Expires.
type Grant struct {
	ID      uint64
	Agent   string
	Host    string
	Port    uint16
	Expires time.Time
}

// GrantSet holds timed bypasses in memory. A grant stops matching at
// its expiry by itself; Sweep removes and returns expired grants so the
// caller can audit them.
type GrantSet struct {
	clock Clock

	mu     sync.Mutex
	nextID uint64
	grants map[uint64]grantEntry
}

type grantEntry struct {
	Grant
	pat hostPattern
}

// NewGrantSet returns an empty set on clock (nil: the wall clock).
func NewGrantSet(clock Clock) *GrantSet {
	if clock == nil {
		clock = realClock{}
	}
	return &GrantSet{clock: clock, grants: map[uint64]grantEntry{}}
}

// ErrNotStored is a grant or block its holder could not persist: the
// server's failure, not the caller's (their input was valid).
var ErrNotStored = errors.New("egress state not stored")

// MaxGrant bounds one bypass: a forgotten grant must not become policy.
const MaxGrant = 24 * time.Hour

// Add grants agent access to target ("host" or "host:port") for ttl.
func (s *GrantSet) Add(agent, target string, ttl time.Duration) (Grant, error) {
	if agent == "" {
		return Grant{}, fmt.Errorf("grant: agent is empty")
	}
	if ttl <= 0 || ttl > MaxGrant {
		return Grant{}, fmt.Errorf("grant: duration %v is outside (0, %v]", ttl, MaxGrant)
	}
	host, port := target, uint16(0)
	if h, p, err := net.SplitHostPort(target); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Grant{}, fmt.Errorf("grant: bad port in %q", target)
		}
		host, port = h, uint16(n)
	}
	pat, err := parseHost(host)
	if err != nil {
		return Grant{}, fmt.Errorf("grant: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	g := Grant{ID: s.nextID, Agent: agent, Host: NormalizeHost(host), Port: port, Expires: s.clock.Now().Add(ttl)}
	s.grants[g.ID] = grantEntry{Grant: g, pat: pat}
	return g, nil
}

// Restore reinstalls a grant saved before a restart, keeping its ID and
// expiry; an expired one is dropped (ok false). Later Adds get higher IDs.
func (s *GrantSet) Restore(g Grant) (ok bool, err error) {
	if g.Agent == "" || g.ID == 0 {
		return false, fmt.Errorf("grant: restore needs an agent and an ID")
	}
	pat, err := parseHost(g.Host)
	if err != nil {
		return false, fmt.Errorf("grant: %w", err)
	}
	if !s.clock.Now().Before(g.Expires) {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID = max(s.nextID, g.ID)
	s.grants[g.ID] = grantEntry{Grant: g, pat: pat}
	return true, nil
}

// Revoke removes a grant early; it reports whether it existed.
func (s *GrantSet) Revoke(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.grants[id]
	delete(s.grants, id)
	return ok
}

// Allows implements Grants: an unexpired grant for agent covering the
// destination.
func (s *GrantSet) Allows(agent, host string, hostIP, dialIP netip.Addr, port uint16) (Grant, bool) {
	if s == nil || agent == "" {
		return Grant{}, false
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.grants {
		if g.Agent != agent || !now.Before(g.Expires) {
			continue
		}
		if (g.Port == 0 || port == 0 || g.Port == port) && g.pat.match(host, hostIP, dialIP) {
			return g.Grant, true
		}
	}
	return Grant{}, false
}

// Active lists the unexpired grants.
func (s *GrantSet) Active() []Grant {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Grant
	for _, g := range s.grants {
		if now.Before(g.Expires) {
			out = append(out, g.Grant)
		}
	}
	return out
}

// Sweep removes expired grants and returns them, for the audit log.
func (s *GrantSet) Sweep() []Grant {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Grant
	for id, g := range s.grants {
		if !now.Before(g.Expires) {
			out = append(out, g.Grant)
			delete(s.grants, id)
		}
	}
	return out
}
