package egress

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
)

type fakePeers struct{ rc agent.ResolvedContainer }

func (f fakePeers) LookupByIP(_ context.Context, ip netip.Addr) (agent.ResolvedContainer, error) {
	if ip != netip.MustParseAddr("127.0.0.1") {
		return agent.ResolvedContainer{}, agent.ErrNoContainerForPeerIP
	}
	return f.rc, nil
}

type busLog struct {
	mu  sync.Mutex
	evs []overseer.Event
}

func (b *busLog) Publish(e overseer.Event) {
	b.mu.Lock()
	b.evs = append(b.evs, e)
	b.mu.Unlock()
}

func (b *busLog) names() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.evs {
		out = append(out, e.EventName())
	}
	return strings.Join(out, ",")
}

// zone answers every name in names with 127.0.0.1.
func zone(t *testing.T, names ...string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		for _, n := range names {
			if dns.Fqdn(n) == r.Question[0].Name && r.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

type fixture struct {
	svc      *Service
	bus      *busLog
	proxy    *url.URL
	upstream string // host:port of the origin, by name
	sub      overseer.Subject
}

func newFixture(t *testing.T, policyDir string) *fixture {
	t.Helper()
	return newFixtureWith(t, policyDir, "")
}

// newFixtureWith also names the state file of blocks and grants.
func newFixtureWith(t *testing.T, policyDir, stateDB string) *fixture {
	t.Helper()
	return newFixtureCfg(t, func(c *Config) { c.PolicyDir, c.StateDB = policyDir, stateDB })
}

// newFixtureCfg lets mod adjust the service's Config before Start.
func newFixtureCfg(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "origin") }))
	t.Cleanup(origin.Close)
	_, port, _ := net.SplitHostPort(origin.Listener.Addr().String())
	p, _ := auth.NewProjectSlug("proj")
	a, _ := auth.NewAgentName("dev")
	bus := &busLog{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := Config{DNSAddr: "127.0.0.1:0", ProxyAddr: "127.0.0.1:0", UpstreamDNS: zone(t, "ok.test", "other.test", "example.com"),
		Peers: fakePeers{agent.ResolvedContainer{ContainerID: "c1", Project: p, AgentName: a}}, Bus: bus}
	mod(&cfg)
	svc, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	pu, _ := url.Parse("http://" + svc.Addr("proxy"))
	return &fixture{svc: svc, bus: bus, proxy: pu, upstream: "ok.test:" + port,
		sub: overseer.Subject{ContainerID: "c1", AgentName: "dev", Project: "proj"}}
}

// get fetches http://host through the gateway and returns the status.
func (f *fixture) get(t *testing.T, hostport string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(f.proxy)}, Timeout: 5 * time.Second}
	res, err := c.Get("http://" + hostport + "/x")
	if err != nil {
		t.Fatalf("get %s: %v", hostport, err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestServiceFailsClosedUntilTrusted(t *testing.T) {
	f := newFixture(t, "")
	port := strings.Split(f.upstream, ":")[1]
	if _, err := f.svc.Reload("proj", []byte("defaults: false\nallow: [{host: ok.test, ports: ["+port+"]}]\n"), "test"); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, f.upstream); got != http.StatusForbidden {
		t.Fatalf("no trust view installed: got %d, want 403", got)
	}
	f.svc.SetTrust(func(string) bool { return false })
	if got := f.get(t, f.upstream); got != http.StatusForbidden {
		t.Fatalf("untrusted peer: got %d, want 403", got)
	}
	f.svc.SetTrust(func(id string) bool { return id == "c1" })
	if got := f.get(t, f.upstream); got != http.StatusOK {
		t.Fatalf("trusted, allowed: got %d, want 200", got)
	}
	if err := f.svc.Block(context.Background(), "c1", true); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, f.upstream); got != http.StatusForbidden {
		t.Fatalf("egress-blocked: got %d, want 403", got)
	}
	if err := f.svc.Block(context.Background(), "c1", false); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, f.upstream); got != http.StatusOK {
		t.Fatalf("unblocked: got %d, want 200", got)
	}
	if n := f.bus.names(); !strings.Contains(n, "egress_denied") || !strings.Contains(n, "egress_allowed") || !strings.Contains(n, "egress_policy_loaded") {
		t.Fatalf("bus events: %s", n)
	}
}

func TestServiceReloadAndGrant(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	f.svc.SetTrust(func(string) bool { return true })
	port := strings.Split(f.upstream, ":")[1]
	other := "other.test:" + port
	if got := f.get(t, other); got != http.StatusForbidden {
		t.Fatalf("defaults only: got %d, want 403", got)
	}
	if _, err := f.svc.Reload("proj", []byte("allow: [{name: o, host: other.test}]\n"), "test"); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, other); got != http.StatusOK {
		t.Fatalf("after reload: got %d, want 200", got)
	}
	if _, err := f.svc.Reload("proj", []byte("allow: [{host: ok.test, bogus: 1}]\n"), "test"); err == nil {
		t.Fatal("unknown key accepted")
	}
	if got := f.get(t, other); got != http.StatusOK {
		t.Fatalf("a refused reload changed the policy: got %d", got)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "proj.yaml")); err != nil || !strings.Contains(string(b), "other.test") {
		t.Fatalf("policy not persisted: %q %v", b, err)
	}
	st, err := newStore(dir, nil)
	if err != nil || st.Matcher("proj") == st.fallback {
		t.Fatalf("persisted policy not loaded back: %v", err)
	}
	if _, err := f.svc.Reload("proj", []byte("defaults: false\n"), "test"); err != nil {
		t.Fatal(err)
	}
	g, err := f.svc.Allow(f.sub, other, time.Second, "test", "why")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, other); got != http.StatusOK {
		t.Fatalf("with grant %d: got %d, want 200", g.ID, got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.get(t, other) != http.StatusForbidden {
		if time.Now().After(deadline) {
			t.Fatal("grant never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(f.bus.names(), "egress_grant_expired") {
		if time.Now().After(deadline) {
			t.Fatalf("no expiry audit: %s", f.bus.names())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStoreBrokenFileDenies(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "proj.yaml"), []byte("allow: [{host: \"\"}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := newStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Matcher("proj") != nil {
		t.Fatal("a broken policy file fell back to defaults")
	}
	if st.Matcher("elsewhere") != st.fallback {
		t.Fatal("an unknown project does not get the defaults")
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Start(context.Background(), Config{DNSAddr: "127.0.0.1:0", ProxyAddr: ln.Addr().String(), UpstreamDNS: "127.0.0.1:1",
		Peers: fakePeers{}, Bus: &busLog{}})
	if err == nil || !strings.Contains(err.Error(), "egress proxy") {
		t.Fatalf("busy proxy port: %v", err)
	}
}

// Decision events render flat in `clawker events` / `egress log`, with
// the agent lifted into the event's identity.
func TestDecisionEventsRenderFlat(t *testing.T) {
	ev := EgressDenied{Subject: overseer.Subject{ContainerID: "c1", AgentName: "dev", Project: "proj"},
		Host: "evil.test", Port: 443, Rule: "no-evil", Stage: "connect", At: time.Now()}
	pe := admin.ToProto(ev)
	if pe.GetName() != "egress_denied" || pe.GetAgent() != "dev" || pe.GetProject() != "proj" || pe.GetContainerId() != "c1" ||
		pe.GetFields()["Host"] != "evil.test" || pe.GetFields()["Rule"] != "no-evil" || pe.GetFields()["Port"] != "443" {
		t.Fatalf("rendered %v", pe)
	}
}
