package logger

import (
	"sync"
	"time"
)

// Throttle bounds how often a repeated log line is written: at most burst
// lines per key per interval, and the next line that is allowed carries the
// number suppressed in between. It keeps a hostile peer that triggers a
// refusal thousands of times a second from turning the CP log into a disk
// filler, while every distinct reason still shows up.
type Throttle struct {
	interval time.Duration
	burst    int
	maxKeys  int
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*throttleKey
	// overflow counts lines suppressed because the key table was full.
	overflow uint64
}

type throttleKey struct {
	window     time.Time // start of the current interval
	lines      int       // lines written in it
	suppressed uint64
}

// DefaultThrottleKeys bounds the key table: keys usually include a peer
// address, which an attacker controls the count of.
const DefaultThrottleKeys = 4096

// NewThrottle returns a Throttle allowing burst lines (at least one) per
// key per interval, remembering at most maxKeys keys (DefaultThrottleKeys
// when <= 0).
func NewThrottle(interval time.Duration, burst, maxKeys int) *Throttle {
	if maxKeys <= 0 {
		maxKeys = DefaultThrottleKeys
	}
	return &Throttle{interval: interval, burst: max(burst, 1), maxKeys: maxKeys, now: time.Now, keys: map[string]*throttleKey{}}
}

// Allow reports whether a line for key may be written now and, if so, how
// many lines for it were suppressed since the last one written. A nil
// Throttle allows everything.
func (t *Throttle) Allow(key string) (ok bool, suppressed uint64) {
	if t == nil {
		return true, 0
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	k, found := t.keys[key]
	if !found {
		if len(t.keys) >= t.maxKeys {
			t.expireLocked(now)
		}
		if len(t.keys) >= t.maxKeys {
			// Still full: every key is recent. Suppress, but count it so
			// the next line of any key reports the loss.
			t.overflow++
			return false, 0
		}
		k = &throttleKey{window: now}
		t.keys[key] = k
	}
	if now.Sub(k.window) >= t.interval || now.Before(k.window) {
		k.window, k.lines = now, 0
	}
	if k.lines >= t.burst {
		k.suppressed++
		return false, 0
	}
	k.lines++
	n := k.suppressed + t.overflow
	k.suppressed, t.overflow = 0, 0
	return true, n
}

// expireLocked drops keys idle for longer than the interval; their
// pending suppressed counts move to overflow so none is lost.
func (t *Throttle) expireLocked(now time.Time) {
	for key, k := range t.keys {
		if now.Sub(k.window) >= t.interval {
			t.overflow += k.suppressed
			delete(t.keys, key)
		}
	}
}
