package logger

import (
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestThrottleOneLinePerIntervalWithSuppressedCount(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := NewThrottle(time.Second, 1, 0)
	th.now = clk.now
	if ok, n := th.Allow("a"); !ok || n != 0 {
		t.Fatalf("first line: ok=%v n=%d", ok, n)
	}
	for i := 0; i < 99; i++ {
		if ok, _ := th.Allow("a"); ok {
			t.Fatalf("line %d within the interval was allowed", i)
		}
	}
	// Another key is not held back by a.
	if ok, _ := th.Allow("b"); !ok {
		t.Fatal("key b throttled by key a")
	}
	clk.add(time.Second)
	if ok, n := th.Allow("a"); !ok || n != 99 {
		t.Fatalf("after the interval: ok=%v suppressed=%d, want true 99", ok, n)
	}
	if ok, n := th.Allow("b"); !ok || n != 0 {
		t.Fatalf("b after the interval: ok=%v n=%d", ok, n)
	}
}

func TestThrottleKeyTableBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := NewThrottle(time.Second, 1, 2)
	th.now = clk.now
	th.Allow("a")
	th.Allow("b")
	if ok, _ := th.Allow("c"); ok {
		t.Fatal("a third key was admitted into a full table of recent keys")
	}
	if len(th.keys) != 2 {
		t.Fatalf("table grew to %d", len(th.keys))
	}
	th.Allow("a") // suppressed, pending on a
	clk.add(2 * time.Second)
	// The table is full of stale keys: c evicts them and reports every
	// suppressed line (one for c overflow, one pending on a).
	if ok, n := th.Allow("c"); !ok || n != 2 {
		t.Fatalf("c after expiry: ok=%v n=%d, want true 2", ok, n)
	}
}

func TestThrottleNilAllowsAndConcurrentUse(t *testing.T) {
	var nilT *Throttle
	if ok, _ := nilT.Allow("x"); !ok {
		t.Fatal("nil throttle suppressed")
	}
	th := NewThrottle(time.Hour, 1, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				if ok, _ := th.Allow("k"); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 1 {
		t.Fatalf("%d lines allowed in one interval, want 1", allowed)
	}
}

func TestThrottleBurst(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := NewThrottle(time.Second, 3, 0)
	th.now = clk.now
	allowed := 0
	for i := 0; i < 10; i++ {
		if ok, _ := th.Allow("a"); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d lines allowed with burst 3", allowed)
	}
	clk.add(time.Second)
	if ok, n := th.Allow("a"); !ok || n != 7 {
		t.Fatalf("next interval: ok=%v suppressed=%d, want true 7", ok, n)
	}
}
