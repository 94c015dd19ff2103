package token

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func jtiRows(t *testing.T, s *SQLiteJTIStore) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM token_jti`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestJTIStorePrunesOncePerInterval: expired rows go on the first
// Consume after jtiPruneInterval, not on every Consume, and a redeemed
// jti stays redeemed across a reopen (CP restart) until it expires.
func TestJTIStorePrunesOncePerInterval(t *testing.T) {
	ctx := context.Background()
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	path := filepath.Join(t.TempDir(), "cp.db")
	s, err := NewSQLiteJTIStore(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	consume := func(s *SQLiteJTIStore, jti string, exp time.Time) bool {
		t.Helper()
		fresh, _, err := s.Consume(ctx, jti, "holder", exp)
		if err != nil {
			t.Fatal(err)
		}
		return fresh
	}
	if !consume(s, "a", clk.Now().Add(time.Second)) {
		t.Fatal("first use of a refused")
	}
	if consume(s, "a", clk.Now().Add(time.Second)) {
		t.Fatal("replay of a accepted")
	}
	// Restart: the redemption is on disk.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = NewSQLiteJTIStore(path, clk.Now); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if consume(s, "a", clk.Now().Add(time.Second)) {
		t.Fatal("replay of a accepted after reopen")
	}
	// a expires, but within the prune interval it is kept.
	clk.Add(2 * time.Second)
	if !consume(s, "b", clk.Now().Add(2*jtiPruneInterval)) {
		t.Fatal("b refused")
	}
	if n := jtiRows(t, s); n != 2 {
		t.Fatalf("%d rows before the interval, want 2 (a not yet pruned)", n)
	}
	clk.Add(jtiPruneInterval)
	if !consume(s, "c", clk.Now().Add(time.Minute)) {
		t.Fatal("c refused")
	}
	if n := jtiRows(t, s); n != 2 {
		t.Fatalf("%d rows after the interval, want 2 (a pruned; b, c kept)", n)
	}
	if consume(s, "b", clk.Now().Add(time.Minute)) {
		t.Fatal("replay of unexpired b accepted after a prune")
	}
}
