package policy

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestGrantExpiresOnTime(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	gs := NewGrantSet(clk)
	m := mustCompile(t, "defaults: false\n")
	req := Request{Agent: "clawker.p.a", Host: "pkg.test", Port: 443}
	if d := m.Decide(req, gs); d.Allowed {
		t.Fatalf("before grant: %+v", d)
	}
	g, err := gs.Add("clawker.p.a", "pkg.test", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	d := m.Decide(req, gs)
	if !d.Allowed || d.Rule.List != ListBypass || d.Rule.String() != "bypass:pkg.test" {
		t.Fatalf("with grant: %+v", d)
	}
	other := req
	other.Agent = "clawker.p.b"
	if d := m.Decide(other, gs); d.Allowed {
		t.Fatalf("grant leaked to another agent: %+v", d)
	}
	if d := m.Decide(Request{Agent: req.Agent, Host: "pkg.test"}, gs); !d.Allowed {
		t.Fatalf("grant does not cover DNS: %+v", d)
	}
	clk.Advance(10*time.Minute - time.Nanosecond)
	if d := m.Decide(req, gs); !d.Allowed {
		t.Fatalf("just before expiry: %+v", d)
	}
	if got := gs.Sweep(); len(got) != 0 {
		t.Fatalf("Sweep before expiry = %v", got)
	}
	clk.Advance(time.Nanosecond)
	if d := m.Decide(req, gs); d.Allowed {
		t.Fatalf("at expiry still allowed: %+v", d)
	}
	if len(gs.Active()) != 0 {
		t.Fatalf("Active after expiry = %v", gs.Active())
	}
	swept := gs.Sweep()
	if len(swept) != 1 || swept[0].ID != g.ID {
		t.Fatalf("Sweep = %v, want [%d]", swept, g.ID)
	}
}

func TestGrantPortAndDenyWins(t *testing.T) {
	clk := &fakeClock{now: time.Unix(0, 0)}
	gs := NewGrantSet(clk)
	m := mustCompile(t, "defaults: false\ndeny: [{name: meta, host: 169.254.169.254}, {name: blocked, host: blocked.test}]\n")
	if _, err := gs.Add("a", "git.test:22", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := gs.Add("a", "blocked.test", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := gs.Add("a", "*.cdn.test", time.Minute); err != nil {
		t.Fatal(err)
	}
	if d := m.Decide(Request{Agent: "a", Host: "git.test", Port: 22}, gs); !d.Allowed {
		t.Fatalf("granted port: %+v", d)
	}
	if d := m.Decide(Request{Agent: "a", Host: "git.test", Port: 443}, gs); d.Allowed {
		t.Fatalf("other port: %+v", d)
	}
	if d := m.Decide(Request{Agent: "a", Host: "x.cdn.test", Port: 443, Method: "GET", Path: "/"}, gs); !d.Allowed {
		t.Fatalf("wildcard grant: %+v", d)
	}
	if d := m.Decide(Request{Agent: "a", Host: "blocked.test", Port: 443}, gs); d.Allowed || d.Rule.Name != "blocked" {
		t.Fatalf("deny must beat a grant: %+v", d)
	}
	if d := m.Decide(Request{Agent: "a", Host: "x.cdn.test", IP: netip.MustParseAddr("169.254.169.254"), Port: 80}, gs); d.Allowed {
		t.Fatalf("grant resolving to a denied IP: %+v", d)
	}
}

func TestGrantAddRefusesBadInput(t *testing.T) {
	gs := NewGrantSet(nil)
	for _, tc := range []struct {
		agent, target string
		ttl           time.Duration
	}{
		{"", "a.test", time.Minute}, {"a", "a.test", 0}, {"a", "a.test", 25 * time.Hour},
		{"a", "bad host", time.Minute}, {"a", "a.test:0", time.Minute}, {"a", "a.test:99999", time.Minute},
	} {
		if _, err := gs.Add(tc.agent, tc.target, tc.ttl); err == nil {
			t.Errorf("Add(%q, %q, %v) accepted", tc.agent, tc.target, tc.ttl)
		}
	}
	g, _ := gs.Add("a", "a.test", time.Minute)
	if !gs.Revoke(g.ID) || gs.Revoke(g.ID) || len(gs.Active()) != 0 {
		t.Fatal("Revoke did not remove exactly once")
	}
}

// A grant saved before a CP restart comes back with its ID and expiry;
// an expired one does not, and new grants do not reuse restored IDs.
func TestGrantRestore(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	gs := NewGrantSet(clk)
	m := mustCompile(t, "defaults: false\n")
	live := Grant{ID: 7, Agent: "clawker.p.a", Host: "pkg.test", Port: 443, Expires: clk.Now().Add(time.Minute)}
	dead := Grant{ID: 3, Agent: "clawker.p.a", Host: "old.test", Expires: clk.Now()}
	if ok, err := gs.Restore(live); !ok || err != nil {
		t.Fatalf("restore live: %v %v", ok, err)
	}
	if ok, err := gs.Restore(dead); ok || err != nil {
		t.Fatalf("restore expired: %v %v", ok, err)
	}
	if _, err := gs.Restore(Grant{ID: 9, Agent: "clawker.p.a", Host: "bad host", Expires: clk.Now().Add(time.Hour)}); err == nil {
		t.Fatal("bad host restored")
	}
	if d := m.Decide(Request{Agent: "clawker.p.a", Host: "pkg.test", Port: 443}, gs); !d.Allowed {
		t.Fatalf("restored grant not honoured: %+v", d)
	}
	if d := m.Decide(Request{Agent: "clawker.p.a", Host: "old.test", Port: 443}, gs); d.Allowed {
		t.Fatalf("expired grant honoured: %+v", d)
	}
	g, err := gs.Add("clawker.p.a", "new.test", time.Minute)
	if err != nil || g.ID <= live.ID {
		t.Fatalf("new grant %+v %v: want an ID above %d", g, err, live.ID)
	}
	clk.Advance(time.Minute)
	if swept := gs.Sweep(); len(swept) != 2 {
		t.Fatalf("Sweep = %v, want both grants", swept)
	}
}
