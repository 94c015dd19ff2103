// Package gateway is the egress gateway's serving side: a DNS resolver
// that answers only names the policy allows, and an HTTP(S) forward
// proxy (plain HTTP, CONNECT tunnels checked against the TLS SNI, and
// optional TLS interception for rules with methods or paths). Every
// decision is attributed to a proven agent, emitted as a typed event and
// counted. Nothing here is wired into the CP yet.
package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawker/clawker/internal/egress/egressca"
	"github.com/clawker/clawker/internal/egress/policy"
	"github.com/clawker/clawker/internal/logger"
)

// Agent is who a peer IP belongs to, as the CP has proven it.
type Agent struct {
	ContainerID string
	Name        string // AgentFullName, the key timed grants use
	Project     string
}

// Attributor maps a connection's peer IP to an agent. The CP implements
// it with its peer lookup and worldview; trusted is false for a peer
// whose identity is not proven. Unknown and untrusted peers are denied.
type Attributor interface {
	Attribute(ctx context.Context, peerIP netip.Addr) (Agent, bool, error)
}

// PolicySource returns the compiled policy of a project; nil denies
// everything. A reload swaps what it returns.
type PolicySource interface {
	Matcher(project string) *policy.Matcher
}

// PolicyFunc adapts a function to PolicySource.
type PolicyFunc func(project string) *policy.Matcher

// Matcher implements PolicySource.
func (f PolicyFunc) Matcher(project string) *policy.Matcher { return f(project) }

// Resolver looks names up upstream at request time; nothing is cached,
// so a rule is always matched against what a name is now.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config is what the gateway's servers share.
type Config struct {
	Attributor Attributor
	Policies   PolicySource
	Grants     policy.Grants // optional timed bypasses
	Resolver   Resolver      // nil: net.DefaultResolver
	Sink       Sink          // optional
	// Decisions counts every decision; build it with NewDecisionCounter
	// and register it where the CP serves /metrics. Optional.
	Decisions *prometheus.CounterVec
	// CA signs interception leaves; nil makes interception rules fail
	// closed.
	CA *egressca.CA
	// UpstreamRoots verifies upstream servers on intercepted
	// connections (nil: system roots). Tests point it at their own roots.
	UpstreamRoots *x509.CertPool
	Log           *logger.Logger
	DialTimeout   time.Duration // default 10 s
}

// Gateway holds the shared decision path of the DNS and proxy servers.
type Gateway struct {
	cfg Config
	log *logger.Logger
}

// New checks cfg and returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Attributor == nil || cfg.Policies == nil {
		return nil, errors.New("gateway: Attributor and Policies are required")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	return &Gateway{cfg: cfg, log: logger.OrNop(cfg.Log)}, nil
}

// caller is an attributed peer with its project's policy.
type caller struct {
	peer    netip.Addr
	agent   Agent
	matcher *policy.Matcher
}

// attribute resolves the peer; a non-nil error means deny (and has been
// recorded as a denied decision).
func (g *Gateway) attribute(ctx context.Context, stage string, peer netip.Addr, req policy.Request) (caller, error) {
	c := caller{peer: peer}
	agent, trusted, err := g.cfg.Attributor.Attribute(ctx, peer)
	reason := ""
	switch {
	case err != nil:
		reason = "attribution failed: " + err.Error()
	case !trusted:
		reason = "peer not trusted"
	}
	c.agent = agent
	if reason == "" {
		if c.matcher = g.cfg.Policies.Matcher(agent.Project); c.matcher == nil {
			reason = "no policy for project"
		}
	}
	if reason != "" {
		g.record(ctx, stage, c, req, policy.Decision{Rule: policy.RuleRef{List: "unattributed", Index: -1, Name: "unattributed"}, Reason: reason})
		return c, errDenied
	}
	return c, nil
}

var errDenied = errors.New("egress denied")

// decide asks the caller's policy and records the decision.
func (g *Gateway) decide(ctx context.Context, stage string, c caller, req policy.Request) policy.Decision {
	req.Agent = c.agent.Name
	d := c.matcher.Decide(req, g.cfg.Grants)
	g.record(ctx, stage, c, req, d)
	return d
}

// dial connects to host:port for an attributed caller, refusing each
// resolved address an IP/CIDR deny rule covers.
func (g *Gateway) dial(ctx context.Context, stage string, c caller, host string, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.DialTimeout)
	defer cancel()
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(policy.NormalizeHost(host)); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		if addrs, err = g.cfg.Resolver.LookupNetIP(ctx, "ip", host); err != nil {
			return nil, err
		}
	}
	var d net.Dialer
	var lastErr error = errors.New("no address")
	for _, a := range addrs {
		if ref, denied := c.matcher.DeniesIP(a, port); denied {
			g.record(ctx, stage, c, policy.Request{Agent: c.agent.Name, Host: host, IP: a, Port: port},
				policy.Decision{Rule: ref, Reason: "resolved address denied"})
			lastErr = errDenied
			continue
		}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(a.String(), strconv.Itoa(int(port))))
		if err == nil {
			return conn, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func peerOf(addr net.Addr) netip.Addr {
	if addr == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// splitHostPort parses "host:port" with a default port.
func splitHostPort(hostport string, def uint16) (string, uint16, bool) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		if def == 0 {
			return "", 0, false
		}
		return policy.NormalizeHost(hostport), def, hostport != ""
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || host == "" {
		return "", 0, false
	}
	return policy.NormalizeHost(host), uint16(n), true
}
