package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/clawker/clawker/internal/egress/policy"
)

// Upstream answers a DNS query the policy allowed. It is asked at
// request time for every query: answers are never pinned.
type Upstream interface {
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
}

// ForwardUpstream relays queries to a recursive resolver ("ip:53").
type ForwardUpstream struct {
	Addr   string
	Client *dns.Client // nil: UDP with a 5 s timeout
}

// Exchange implements Upstream.
func (f ForwardUpstream) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	c := f.Client
	if c == nil {
		c = &dns.Client{Timeout: 5 * time.Second}
	}
	r, _, err := c.ExchangeContext(ctx, q, f.Addr)
	if err != nil {
		return nil, fmt.Errorf("dns upstream %s: %w", f.Addr, err)
	}
	return r, nil
}

// DNSHandler is the agents' resolver: it answers only names the
// caller's policy allows (NXDOMAIN otherwise; REFUSED for an unproven
// peer) and drops resolved addresses an IP/CIDR deny rule covers.
type DNSHandler struct {
	g        *Gateway
	upstream Upstream
}

// NewDNSHandler returns a miekg/dns handler over upstream.
func NewDNSHandler(g *Gateway, upstream Upstream) *DNSHandler {
	return &DNSHandler{g: g, upstream: upstream}
}

// ServeDNS implements dns.Handler.
func (h *DNSHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := h.answer(ctx, peerOf(w.RemoteAddr()), r)
	if err := w.WriteMsg(resp); err != nil {
		h.g.log.Debug().Str("event", "egress_dns_write_failed").Err(err).Msg("dns reply not sent")
	}
}

func (h *DNSHandler) answer(ctx context.Context, peer netip.Addr, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 || r.Question[0].Qclass != dns.ClassINET {
		return m.SetRcode(r, dns.RcodeRefused)
	}
	name := strings.TrimSuffix(strings.ToLower(r.Question[0].Name), ".")
	req := policy.Request{Host: name}
	c, err := h.g.attribute(ctx, StageDNS, peer, req)
	if err != nil {
		return m.SetRcode(r, dns.RcodeRefused)
	}
	if d := h.g.decide(ctx, StageDNS, c, req); !d.Allowed {
		return m.SetRcode(r, dns.RcodeNameError)
	}
	up, err := h.upstream.Exchange(ctx, r.Copy())
	if err != nil || up == nil {
		h.g.log.Warn().Str("event", "egress_dns_upstream_failed").Str("name", name).Err(err).Msg("upstream resolver failed")
		return m.SetRcode(r, dns.RcodeServerFailure)
	}
	up.Id = r.Id
	up.Answer = h.filter(c, up.Answer)
	up.Extra = h.filter(c, up.Extra)
	return up
}

// filter drops A/AAAA records whose address a deny rule covers.
func (h *DNSHandler) filter(c caller, rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		var ip netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(v.A.To4())
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(v.AAAA.To16())
		}
		if ip.IsValid() {
			if _, denied := c.matcher.DeniesIP(ip, 0); denied {
				continue
			}
		}
		out = append(out, rr)
	}
	return out
}

// StaticZone is test mode: a fixed name → addresses table serving both
// the DNS handler (as Upstream) and the proxy (as Resolver), so tests
// and the fake internet need no real resolver.
type StaticZone map[string][]netip.Addr

func (z StaticZone) lookup(host string) []netip.Addr {
	return z[strings.TrimSuffix(strings.ToLower(host), ".")]
}

// LookupNetIP implements Resolver.
func (z StaticZone) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range z.lookup(host) {
		if network == "ip" || network == "ip4" && a.Is4() || network == "ip6" && a.Is6() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("static zone: no address for %q", host)
	}
	return out, nil
}

// Exchange implements Upstream for A and AAAA; other types get an empty
// answer, unknown names NXDOMAIN.
func (z StaticZone) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	qs := q.Question[0]
	addrs := z.lookup(qs.Name)
	if len(addrs) == 0 {
		return m.SetRcode(q, dns.RcodeNameError), nil
	}
	hdr := dns.RR_Header{Name: qs.Name, Class: dns.ClassINET, Ttl: 0}
	for _, a := range addrs {
		switch {
		case qs.Qtype == dns.TypeA && a.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case qs.Qtype == dns.TypeAAAA && a.Is6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return m, nil
}
