package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clawker/clawker/internal/egress/policy"
)

const dnsPolicy = `
defaults: false
allow:
  - {name: web, host: web.test}
  - {name: wild, host: "*.cdn.test", ports: [443]}
  - {name: rebind, host: rebind.test}
deny:
  - {name: bad, host: bad.cdn.test}
  - {name: meta, host: 169.254.0.0/16}
`

// countingZone counts upstream queries, to show answers are fetched per
// request and never pinned.
type countingZone struct {
	mu   sync.Mutex
	zone StaticZone
	n    atomic.Int32
}

func (z *countingZone) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	z.n.Add(1)
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.zone.Exchange(ctx, q)
}

func (z *countingZone) set(name string, a ...netip.Addr) {
	z.mu.Lock()
	z.zone[name] = a
	z.mu.Unlock()
}

func startDNS(t *testing.T, h dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func query(t *testing.T, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

func newDNSEnv(t *testing.T, attr Attributor) (string, *countingZone, *eventLog) {
	t.Helper()
	e := newEnv(t, dnsPolicy, attr)
	zone := &countingZone{zone: StaticZone{
		"web.test":     {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")},
		"a.cdn.test":   {netip.MustParseAddr("192.0.2.11")},
		"bad.cdn.test": {netip.MustParseAddr("192.0.2.12")},
		"other.test":   {netip.MustParseAddr("192.0.2.13")},
		"rebind.test":  {netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("192.0.2.14")},
	}}
	return startDNS(t, NewDNSHandler(e.gw, zone)), zone, e.events
}

func addrsOf(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}

func TestDNSAnswersAllowedNamesOnly(t *testing.T) {
	addr, zone, events := newDNSEnv(t, nil)
	r := query(t, addr, "web.test", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(addrsOf(r)) != 1 || addrsOf(r)[0] != "192.0.2.10" {
		t.Fatalf("web.test A = %s %v", dns.RcodeToString[r.Rcode], addrsOf(r))
	}
	if r := query(t, addr, "WEB.test", dns.TypeAAAA); len(addrsOf(r)) != 1 || addrsOf(r)[0] != "2001:db8::10" {
		t.Fatalf("web.test AAAA = %v", addrsOf(r))
	}
	if r := query(t, addr, "a.cdn.test", dns.TypeA); len(addrsOf(r)) != 1 {
		t.Fatalf("wildcard name = %s %v", dns.RcodeToString[r.Rcode], addrsOf(r))
	}
	for _, name := range []string{"bad.cdn.test", "other.test", "cdn.test"} {
		if r := query(t, addr, name, dns.TypeA); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Fatalf("%s = %s %v, want NXDOMAIN", name, dns.RcodeToString[r.Rcode], addrsOf(r))
		}
	}
	before := zone.n.Load()
	_ = query(t, addr, "other.test", dns.TypeA)
	if zone.n.Load() != before {
		t.Fatal("a denied name was sent upstream")
	}
	// Request time, never pinned: a changed zone is seen by the next query.
	zone.set("web.test", netip.MustParseAddr("192.0.2.99"))
	if r := query(t, addr, "web.test", dns.TypeA); len(addrsOf(r)) != 1 || addrsOf(r)[0] != "192.0.2.99" {
		t.Fatalf("after zone change = %v", addrsOf(r))
	}
	ev := events.find(t, StageDNS, "bad.cdn.test")
	if ev.Kind != EgressDenied || ev.Rule != "bad" || ev.Agent != testAgent || ev.Port != 0 {
		t.Fatalf("dns deny event %+v", ev)
	}
	if ev := events.find(t, StageDNS, "web.test"); ev.Kind != EgressAllowed || ev.Rule != "web" {
		t.Fatalf("dns allow event %+v", ev)
	}
}

func TestDNSDropsDeniedAddresses(t *testing.T) {
	addr, _, _ := newDNSEnv(t, nil)
	r := query(t, addr, "rebind.test", dns.TypeA)
	if got := addrsOf(r); len(got) != 1 || got[0] != "192.0.2.14" {
		t.Fatalf("rebind.test = %v, want only 192.0.2.14", got)
	}
}

func TestDNSRefusesUntrustedPeer(t *testing.T) {
	addr, zone, events := newDNSEnv(t, fakeAttributor{agent: testAgent})
	if r := query(t, addr, "web.test", dns.TypeA); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Fatalf("untrusted = %s %v, want REFUSED", dns.RcodeToString[r.Rcode], addrsOf(r))
	}
	if zone.n.Load() != 0 {
		t.Fatal("untrusted query reached upstream")
	}
	if ev := events.find(t, StageDNS, "web.test"); ev.Kind != EgressDenied || ev.Rule != "unattributed" {
		t.Fatalf("event %+v", ev)
	}
}

func TestDNSRefusesOddQueries(t *testing.T) {
	addr, _, _ := newDNSEnv(t, nil)
	m := new(dns.Msg)
	m.SetQuestion("web.test.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("CHAOS class = %v %v, want REFUSED", r, err)
	}
}

func TestStaticZoneResolver(t *testing.T) {
	z := StaticZone{"x.test": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	if a, err := z.LookupNetIP(context.Background(), "ip4", "X.test."); err != nil || len(a) != 1 || !a[0].Is4() {
		t.Fatalf("ip4 = %v %v", a, err)
	}
	if _, err := z.LookupNetIP(context.Background(), "ip", "y.test"); err == nil {
		t.Fatal("unknown name resolved")
	}
	var _ policy.Grants = (*policy.GrantSet)(nil)
}
