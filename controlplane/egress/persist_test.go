package egress

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/egress/policy"
)

// Issue 18: an operator's egress block and a timed grant survive a CP
// restart (a new Service on the same state file); an expired grant is
// not restored, and an unblock is remembered too.
func TestBlocksAndGrantsSurviveRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "egress.db")
	ctx := context.Background()
	f := newFixtureWith(t, "", db)
	if _, err := f.svc.Reload("proj", []byte("defaults: false\n"), "test"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Block(ctx, "c1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Allow(f.sub, "other.test", 10*time.Minute, "test", "why"); err != nil {
		t.Fatal(err)
	}
	// A grant that expired while the CP was down: written as saved.
	if err := f.svc.state.addGrant(ctx, savedGrant{Grant: policy.Grant{ID: 99, Agent: "clawker.proj.dev", Host: "ok.test",
		Expires: time.Now().Add(-time.Second)}, sub: f.sub}); err != nil {
		t.Fatal(err)
	}
	f.svc.Close()

	g := newFixtureWith(t, "", db)
	g.svc.SetTrust(func(string) bool { return true })
	if _, err := g.svc.Reload("proj", []byte("defaults: false\n"), "test"); err != nil {
		t.Fatal(err)
	}
	port := strings.Split(g.upstream, ":")[1]
	if !g.svc.Blocked("c1") || g.get(t, "other.test:"+port) != http.StatusForbidden {
		t.Fatal("the egress block did not survive the restart")
	}
	if err := g.svc.Block(ctx, "c1", false); err != nil {
		t.Fatal(err)
	}
	if got := g.get(t, "other.test:"+port); got != http.StatusOK {
		t.Fatalf("restored grant: got %d, want 200", got)
	}
	if got := g.get(t, g.upstream); got != http.StatusForbidden {
		t.Fatalf("expired grant restored: got %d, want 403", got)
	}
	active := g.svc.grants.Active()
	if len(active) != 1 || active[0].Host != "other.test" {
		t.Fatalf("active grants after restart %+v", active)
	}
	if sub := g.svc.grantSub[active[0].ID]; sub != f.sub {
		t.Fatalf("restored grant's subject %+v, want %+v", sub, f.sub)
	}
	if n, err := g.svc.Allow(g.sub, "third.test", time.Minute, "test", ""); err != nil || n.ID <= active[0].ID {
		t.Fatalf("new grant %+v %v reuses a restored ID", n, err)
	}
	g.svc.Close()

	h := newFixtureWith(t, "", db)
	if h.svc.Blocked("c1") {
		t.Fatal("an unblock did not survive the restart")
	}
	if n := len(h.svc.grants.Active()); n != 2 {
		t.Fatalf("%d grants after the second restart, want 2", n)
	}
}

// Blocks the gateway cannot store: a block still applies now (fail
// closed), an unblock does not, a grant is refused; all with
// ErrNotStored.
func TestStateWriteFailureFailsClosed(t *testing.T) {
	f := newFixtureWith(t, "", filepath.Join(t.TempDir(), "egress.db"))
	f.svc.state.db.Close()
	ctx := context.Background()
	if err := f.svc.Block(ctx, "c1", true); !errors.Is(err, policy.ErrNotStored) || !f.svc.Blocked("c1") {
		t.Fatalf("block: %v, blocked %v", err, f.svc.Blocked("c1"))
	}
	if err := f.svc.Block(ctx, "c1", false); !errors.Is(err, policy.ErrNotStored) || !f.svc.Blocked("c1") {
		t.Fatalf("unblock: %v, blocked %v", err, f.svc.Blocked("c1"))
	}
	if _, err := f.svc.Allow(f.sub, "other.test", time.Minute, "test", ""); !errors.Is(err, policy.ErrNotStored) {
		t.Fatalf("allow: %v", err)
	}
	if n := len(f.svc.grants.Active()); n != 0 {
		t.Fatalf("%d grants active after a refused grant", n)
	}
}

// An unreadable state file fails the start: serving would lift blocks.
func TestStartFailsOnUnreadableState(t *testing.T) {
	db := filepath.Join(t.TempDir(), "egress.db")
	if err := os.WriteFile(db, []byte("not a database, but long enough to have a header......................"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Config{DNSAddr: "127.0.0.1:0", ProxyAddr: "127.0.0.1:0", UpstreamDNS: "127.0.0.1:1",
		StateDB: db, Peers: fakePeers{}, Bus: &busLog{}})
	if err == nil {
		t.Fatal("started on an unreadable state file")
	}
}
