package token

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/clawker/clawker/internal/logger"
)

// fakeRegistrations answers Registered from a set, or with err.
type fakeRegistrations struct {
	mu   sync.Mutex
	rows map[string]bool
	err  error
}

func (f *fakeRegistrations) Registered(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rows[id], f.err
}

func (f *fakeRegistrations) set(id string, registered bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows[id], f.err = registered, err
}

// restartIssuer is the next CP: the same jti store file reopened, a new
// Issuer with regs.
func (f *tokenFixture) restartIssuer(t *testing.T, lookup PeerResolver, regs Registrations) {
	t.Helper()
	if err := f.jti.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := NewSQLiteJTIStore(f.dbPath, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f.jti = store
	f.iss, err = NewIssuer(Config{AssertionKey: &f.cliKey.PublicKey, JTI: store, PeerLookup: lookup,
		Registrations: regs, Clock: f.clock, Log: logger.New(f.logs, "debug", "test")})
	if err != nil {
		t.Fatal(err)
	}
}

// TestExchangeRepeatedAfterLostAnswer: a CP killed after burning an
// assertion and before its answer reached the agent left the agent
// unregistered for good (the crash soak's "live agent has no registry
// row"). The cert that redeemed it may now exchange it again, at the next
// CP, until its agent is registered; no other cert may, and a registry
// that cannot answer allows no repeat.
func TestExchangeRepeatedAfterLostAnswer(t *testing.T) {
	f := newTokenFixture(t, nil)
	a := f.assertion(t, 1)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != http.StatusOK {
		t.Fatalf("first use: %d %s", w.Code, w.Body)
	}
	// The answer is lost; the CP restarts on the same store.
	regs := &fakeRegistrations{rows: map[string]bool{}}
	f.restartIssuer(t, staticLookup{rc: resolvedFor(t, 1)}, regs)

	other := f.agentLeaf(t, 1) // a second cert for the same container
	if w := f.post(postOpts{leaf: other, form: f.form(a)}); w.Code != http.StatusUnauthorized {
		t.Fatalf("repeat by another cert: %d %s", w.Code, w.Body)
	}
	regs.set(cid(1), false, errors.New("registry down"))
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != http.StatusUnauthorized {
		t.Fatalf("repeat while the registry cannot answer: %d %s", w.Code, w.Body)
	}
	regs.set(cid(1), false, nil)
	w := f.post(postOpts{leaf: f.leaf, form: f.form(a)})
	if w.Code != http.StatusOK || !strings.Contains(f.logs.String(), `"event":"token_exchange_repeated"`) {
		t.Fatalf("repeat by the redeeming cert before Register: %d %s\n%s", w.Code, w.Body, f.logs)
	}
	regs.set(cid(1), true, nil)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != http.StatusUnauthorized {
		t.Fatalf("repeat after Register: %d %s", w.Code, w.Body)
	}
}

// TestSpentAssertionPrecheckedWithoutLookup: once its agent is
// registered, a spent assertion is refused by the read-only check, before
// any peer lookup, even from the cert that redeemed it; before that, that
// cert's repeat goes through the whole gate.
func TestSpentAssertionPrecheckedWithoutLookup(t *testing.T) {
	f := newTokenFixture(t, nil)
	a := f.assertion(t, 1)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != http.StatusOK {
		t.Fatalf("first use: %d %s", w.Code, w.Body)
	}
	regs := &fakeRegistrations{rows: map[string]bool{cid(1): true}}
	lookup := &countingLookup{rc: resolvedFor(t, 1)}
	f.restartIssuer(t, lookup, regs)
	for range 10 { // under the per-peer refusal budget
		if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != http.StatusUnauthorized {
			t.Fatalf("replay after Register: %d %s", w.Code, w.Body)
		}
	}
	if n, pre := lookup.n.Load(), f.iss.Stats().ReplaysPrechecked; n != 0 || pre != 10 {
		t.Fatalf("%d peer lookups, %d prechecked: want 0 and 10", n, pre)
	}
	regs.set(cid(1), false, nil)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != http.StatusOK || lookup.n.Load() != 1 {
		t.Fatalf("repeat before Register: %d, %d lookups", w.Code, lookup.n.Load())
	}
}

// plainJTIStore is a JTIStore without the read-only check, so Consume's
// holder answer alone decides a repeat.
type plainJTIStore struct{ MemoryJTIStore }

func (s *plainJTIStore) Redeemer() {} // hides MemoryJTIStore's JTIChecker method

// TestRepeatDecidedByConsumeAndBounded: without a precheck, Consume's
// recorded holder decides (another cert is refused, the redeeming one
// repeats), and repeats are charged to the peer's refusal budget, so a
// peer that keeps repeating is cut off.
func TestRepeatDecidedByConsumeAndBounded(t *testing.T) {
	f := newTokenFixture(t, nil)
	regs := &fakeRegistrations{rows: map[string]bool{}}
	store := &plainJTIStore{}
	var err error
	f.iss, err = NewIssuer(Config{AssertionKey: &f.cliKey.PublicKey, JTI: store, PeerLookup: staticLookup{rc: resolvedFor(t, 1)},
		Registrations: regs, Clock: f.clock, Log: logger.New(f.logs, "debug", "test")})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := any(store).(JTIChecker); ok {
		t.Fatal("the store must not offer the precheck")
	}
	a := f.assertion(t, 1)
	if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code != http.StatusOK {
		t.Fatalf("first use: %d %s", w.Code, w.Body)
	}
	if w := f.post(postOpts{leaf: f.agentLeaf(t, 1), form: f.form(a)}); w.Code != http.StatusUnauthorized {
		t.Fatalf("repeat by another cert: %d", w.Code)
	}
	ok := 0
	for range 3 * refusalBurst {
		if w := f.post(postOpts{leaf: f.leaf, form: f.form(a)}); w.Code == http.StatusOK {
			ok++
		}
	}
	if ok == 0 || ok >= 3*refusalBurst || f.iss.Stats().RateLimited == 0 {
		t.Fatalf("%d of %d repeats issued, %d rate limited: want some, then the budget spent", ok, 3*refusalBurst, f.iss.Stats().RateLimited)
	}
}
