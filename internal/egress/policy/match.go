package policy

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Lists a matched rule can come from.
const (
	ListAllow   = "allow"
	ListDeny    = "deny"
	ListDefault = "default"
	ListBypass  = "bypass"
	ListNone    = "none" // nothing matched: denied by default
)

// RuleRef attributes a decision to the rule that made it.
type RuleRef struct {
	List  string
	Index int // position in its list; -1 for ListNone
	Name  string
}

// String is the rule's name, or "list[index]" when it has none.
func (r RuleRef) String() string {
	switch {
	case r.Name != "":
		return r.Name
	case r.List == ListNone:
		return "default-deny"
	default:
		return fmt.Sprintf("%s[%d]", r.List, r.Index)
	}
}

// Request is one thing the gateway is asked to let through. Port 0 means
// "any port" (a DNS query); an empty Method means a connection whose
// HTTP requests are not visible (a tunnel).
type Request struct {
	Agent string // the attributed agent's full name, for grants
	Host  string // name or IP literal as the agent asked for it
	// IP is the address about to be dialed for a name, so IP/CIDR
	// deny rules also hold against what a name resolves to.
	IP        netip.Addr
	Port      uint16
	Method    string
	Path      string
	WebSocket bool
}

// Decision is the matcher's answer. Reason is for the log only.
type Decision struct {
	Allowed bool
	// Intercept: allow the tunnel only with TLS terminated, deciding
	// each HTTP request inside it again.
	Intercept bool
	Rule      RuleRef
	Reason    string
}

// Grants is the bypass set a Matcher consults after its allow rules.
type Grants interface {
	Allows(agent, host string, hostIP, dialIP netip.Addr, port uint16) (Grant, bool)
}

type compiledRule struct {
	ref      RuleRef
	host     hostPattern
	ports    []uint16
	methods  []string
	paths    []string
	regexes  []*regexp.Regexp
	ws       bool
	intercpt bool
}

// Matcher is a compiled Policy. It is immutable and safe for concurrent
// use; a reload compiles a new one.
type Matcher struct {
	allow []compiledRule // user rules, then defaults
	deny  []compiledRule
}

// Compile validates p and builds its Matcher.
func Compile(p Policy) (*Matcher, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	m := &Matcher{}
	for i, r := range p.Deny {
		m.deny = append(m.deny, compileRule(r, RuleRef{List: ListDeny, Index: i, Name: r.Name}))
	}
	for i, r := range p.Allow {
		m.allow = append(m.allow, compileRule(r, RuleRef{List: ListAllow, Index: i, Name: r.Name}))
	}
	if p.DefaultsEnabled() {
		for i, r := range Defaults() {
			m.allow = append(m.allow, compileRule(r, RuleRef{List: ListDefault, Index: i, Name: r.Name}))
		}
	}
	return m, nil
}

func compileRule(r Rule, ref RuleRef) compiledRule {
	host, _ := parseHost(r.Host) // Validate ran
	c := compiledRule{ref: ref, host: host, paths: r.Paths, ws: r.WebSocket, intercpt: r.Intercept}
	for _, p := range r.Ports {
		c.ports = append(c.ports, uint16(p))
	}
	for _, m := range r.Methods {
		c.methods = append(c.methods, strings.ToUpper(m))
	}
	for _, re := range r.PathRegex {
		c.regexes = append(c.regexes, regexp.MustCompile(re))
	}
	return c
}

func (c *compiledRule) httpScoped() bool {
	return len(c.methods) > 0 || len(c.paths) > 0 || len(c.regexes) > 0
}

func (c *compiledRule) hostPort(host string, hostIP, dialIP netip.Addr, port uint16) bool {
	if !c.host.match(host, hostIP, dialIP) {
		return false
	}
	return port == 0 || len(c.ports) == 0 || slices.Contains(c.ports, port)
}

// httpMatch: the method is in the list (if any) and the path matches a
// prefix or a regex (if any are given).
func (c *compiledRule) httpMatch(method, p string) bool {
	if len(c.methods) > 0 && !slices.Contains(c.methods, method) {
		return false
	}
	if len(c.paths) == 0 && len(c.regexes) == 0 {
		return true
	}
	for _, pre := range c.paths {
		if p == pre || strings.HasPrefix(p, pre) && (strings.HasSuffix(pre, "/") || p[len(pre)] == '/') {
			return true
		}
	}
	for _, re := range c.regexes {
		if re.MatchString(p) {
			return true
		}
	}
	return false
}

// CleanPath is the path rules are matched against: decoded, with dot
// segments resolved (so "/ok/../secret" cannot pass as "/ok/").
func CleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func deny(ref RuleRef, reason string) Decision { return Decision{Rule: ref, Reason: reason} }

var noRule = RuleRef{List: ListNone, Index: -1}

// Decide answers one request; g may be nil. Deny rules are checked
// first and win over allow rules, defaults and grants.
func (m *Matcher) Decide(req Request, g Grants) Decision {
	host := NormalizeHost(req.Host)
	var hostIP netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		hostIP = a.Unmap()
	}
	grant := func() (Decision, bool) {
		if g == nil {
			return Decision{}, false
		}
		gr, ok := g.Allows(req.Agent, host, hostIP, req.IP, req.Port)
		if !ok {
			return Decision{}, false
		}
		return Decision{Allowed: true, Rule: RuleRef{List: ListBypass, Index: -1, Name: "bypass:" + gr.Host}, Reason: "timed bypass"}, true
	}
	switch {
	case req.Port == 0:
		return m.decideName(host, hostIP, req, grant)
	case req.Method == "":
		return m.decideTunnel(host, hostIP, req, grant)
	default:
		return m.decideHTTP(host, hostIP, req, grant)
	}
}

// decideName answers a DNS query: a name resolves when any allow rule
// could use it and no unconditional deny covers it.
func (m *Matcher) decideName(host string, hostIP netip.Addr, req Request, grant func() (Decision, bool)) Decision {
	for i := range m.deny {
		d := &m.deny[i]
		if len(d.ports) == 0 && !d.httpScoped() && d.hostPort(host, hostIP, req.IP, 0) {
			return deny(d.ref, "name denied")
		}
	}
	for i := range m.allow {
		if a := &m.allow[i]; a.hostPort(host, hostIP, req.IP, 0) {
			return Decision{Allowed: true, Rule: a.ref}
		}
	}
	if d, ok := grant(); ok {
		return d
	}
	return deny(noRule, "no rule allows the name")
}

// decideTunnel answers a CONNECT whose content is opaque unless
// intercepted. HTTP-scoped rules apply only with Intercept; an HTTP deny
// rule that cannot be enforced (no Intercept) denies the tunnel, failing
// closed.
func (m *Matcher) decideTunnel(host string, hostIP netip.Addr, req Request, grant func() (Decision, bool)) Decision {
	needIntercept := false
	for i := range m.deny {
		d := &m.deny[i]
		if !d.hostPort(host, hostIP, req.IP, req.Port) {
			continue
		}
		if !d.httpScoped() {
			return deny(d.ref, "destination denied")
		}
		if !d.intercpt {
			return deny(d.ref, "HTTP deny rule without intercept cannot be enforced on a tunnel")
		}
		needIntercept = true
	}
	var hostLevel, viaIntercept *compiledRule
	for i := range m.allow {
		a := &m.allow[i]
		if !a.hostPort(host, hostIP, req.IP, req.Port) {
			continue
		}
		if !a.httpScoped() && hostLevel == nil {
			hostLevel = a
		} else if a.httpScoped() && a.intercpt && viaIntercept == nil {
			viaIntercept = a
		}
	}
	switch {
	case hostLevel != nil:
		return Decision{Allowed: true, Intercept: needIntercept, Rule: hostLevel.ref}
	case viaIntercept != nil:
		return Decision{Allowed: true, Intercept: true, Rule: viaIntercept.ref}
	}
	if d, ok := grant(); ok {
		d.Intercept = needIntercept
		return d
	}
	return deny(noRule, "no rule allows the destination")
}

// decideHTTP answers one visible HTTP request (plain or intercepted).
func (m *Matcher) decideHTTP(host string, hostIP netip.Addr, req Request, grant func() (Decision, bool)) Decision {
	method, p := strings.ToUpper(req.Method), CleanPath(req.Path)
	for i := range m.deny {
		d := &m.deny[i]
		if d.hostPort(host, hostIP, req.IP, req.Port) && d.httpMatch(method, p) {
			return deny(d.ref, "request denied")
		}
	}
	var wsRefused *compiledRule
	for i := range m.allow {
		a := &m.allow[i]
		if !a.hostPort(host, hostIP, req.IP, req.Port) || !a.httpMatch(method, p) {
			continue
		}
		if req.WebSocket && !a.ws {
			if wsRefused == nil {
				wsRefused = a
			}
			continue
		}
		return Decision{Allowed: true, Rule: a.ref}
	}
	if d, ok := grant(); ok {
		return d
	}
	if wsRefused != nil {
		return deny(wsRefused.ref, "rule does not allow websocket upgrades")
	}
	return deny(noRule, "no rule allows the request")
}

// DeniesIP reports the unconditional IP/CIDR deny rule, if any, that
// forbids dialing ip:port. The gateway asks it for every address a
// permitted name resolves to, so DNS cannot smuggle a denied network in.
func (m *Matcher) DeniesIP(ip netip.Addr, port uint16) (RuleRef, bool) {
	ip = ip.Unmap()
	for i := range m.deny {
		d := &m.deny[i]
		if d.host.prefix.IsValid() && !d.httpScoped() && d.hostPort("", ip, netip.Addr{}, port) {
			return d.ref, true
		}
	}
	return RuleRef{}, false
}
