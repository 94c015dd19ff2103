package token

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/consts"
)

// countingLookup counts peer lookups: in the CP each can cost a Docker
// inspect or list.
type countingLookup struct {
	rc peerid.Container
	n  atomic.Int64
}

func (c *countingLookup) LookupByIP(context.Context, netip.Addr) (peerid.Container, error) {
	c.n.Add(1)
	return c.rc, nil
}

// TestReplayRefusedBeforeLookup: a replayed assertion is refused by the
// read-only jti check, with no peer lookup (no Docker call) however often
// it is replayed.
func TestReplayRefusedBeforeLookup(t *testing.T) {
	lk := &countingLookup{rc: resolvedFor(t, 1)}
	f := newTokenFixture(t, lk)
	a := f.assertion(t, 1)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != 200 {
		t.Fatalf("first use: %d %s", w.Code, w.Body)
	}
	if lk.n.Load() != 1 {
		t.Fatalf("first use made %d lookups", lk.n.Load())
	}
	for i := 0; i < 15; i++ {
		w := f.post(postOpts{leaf: f.leaf, form: f.form(a)})
		if w.Code != 401 || strings.TrimSpace(w.Body.String()) != `{"error":"invalid_client","error_description":"client authentication failed"}` {
			t.Fatalf("replay %d: %d %s", i, w.Code, w.Body)
		}
	}
	if got := lk.n.Load(); got != 1 {
		t.Fatalf("15 replays made %d more peer lookups, want 0", got-1)
	}
	if got := f.iss.Stats().ReplaysPrechecked; got != 15 {
		t.Fatalf("ReplaysPrechecked = %d, want 15", got)
	}
	if !strings.Contains(f.logs.String(), `"event":"token_assertion_replayed"`) {
		t.Error("no token_assertion_replayed line")
	}
}

// TestRefusalsRateLimitedPerPeer: past its refusal budget a peer is
// refused up front with the generic answer, even with a valid request;
// other peers are unaffected; log lines are throttled with a count.
func TestRefusalsRateLimitedPerPeer(t *testing.T) {
	lk := &countingLookup{rc: resolvedFor(t, 1)}
	f := newTokenFixture(t, lk)
	// A frozen budget clock: the budget refills 5/s, and a slow -race run
	// must not refill it mid-test.
	frozen := f.now
	f.iss.refusals.now = func() time.Time { return frozen }
	bad := f.form(f.assertion(t, 1))
	bad.Set("client_assertion", "not-a-jwt")
	for i := 0; i < 200; i++ {
		if w := f.post(postOpts{leaf: f.leaf, form: bad}); w.Code != 401 {
			t.Fatalf("bad %d: %d", i, w.Code)
		}
	}
	if got := f.iss.Stats().RateLimited; got < 200-refusalBurst-20 {
		t.Fatalf("RateLimited = %d after 200 refusals, want most of them", got)
	}
	w := f.post(postOpts{leaf: f.leaf, form: f.form(f.assertion(t, 1))})
	if w.Code != 401 || lk.n.Load() != 0 {
		t.Fatalf("valid request from an exhausted peer: %d, %d lookups; want 401 with none", w.Code, lk.n.Load())
	}
	logs := f.logs.String()
	if n := strings.Count(logs, `"event":"token_assertion_malformed"`); n != refusalLogBurst {
		t.Errorf("%d token_assertion_malformed lines for 20 refusals, want %d (throttled)", n, refusalLogBurst)
	}
	if n := strings.Count(logs, `"event":"token_refusal_rate_limited"`); n != refusalLogBurst {
		t.Errorf("%d token_refusal_rate_limited lines for 180, want %d (throttled)", n, refusalLogBurst)
	}
	// Another peer is not held back.
	r := f.post2(t, "10.9.0.3:40000", f.form(f.assertion(t, 1)))
	if r != 200 {
		t.Fatalf("another peer refused: %d", r)
	}
}

// post2 posts form with leaf 1 from remote.
func (f *tokenFixture) post2(t *testing.T, remote string, form map[string][]string) int {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, consts.TokenPath, strings.NewReader(url.Values(form).Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.RemoteAddr = remote
	r.TLS = &tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{f.leaf.Cert},
		VerifiedChains:   [][]*x509.Certificate{{f.leaf.Cert, f.ca.Cert}},
	}
	w := httptest.NewRecorder()
	f.iss.Handler().ServeHTTP(w, r)
	return w.Code
}
