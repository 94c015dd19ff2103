package clawkerd

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRegisterPrewarmedConnsAreUsed: a Session on a fresh container opens
// both CP connections before RegisterRequired without spending the
// assertion, and Register then runs over exactly those connections.
func TestRegisterPrewarmedConnsAreUsed(t *testing.T) {
	ts, cp := startServerWithCP(t, nil)
	c := ts.session(t)
	eventually(t, 10*time.Second, "pre-dialed CP conns", func() bool {
		return cp.tokenConns.Load() == 1 && cp.agentConns.Load() == 1
	})
	if cp.exchanges.Load() != 0 || cp.registers.Load() != 0 {
		t.Fatalf("pre-warm spent the assertion: exchanges=%d registers=%d", cp.exchanges.Load(), cp.registers.Load())
	}
	if d := registerRequired(c, "reg"); !d.GetOk() {
		t.Fatalf("RegisterDone %v", d)
	}
	if cp.exchanges.Load() != 1 || cp.registers.Load() != 1 {
		t.Fatalf("exchanges=%d registers=%d, want 1/1", cp.exchanges.Load(), cp.registers.Load())
	}
	if n, m := cp.tokenConns.Load(), cp.agentConns.Load(); n != 1 || m != 1 {
		t.Fatalf("token conns %d, agent conns %d: Register dialed anew instead of using the warm ones", n, m)
	}
	// Registered: later Sessions warm nothing.
	ts.session(t).hello()
	if n, m := cp.tokenConns.Load(), cp.agentConns.Load(); n != 1 || m != 1 {
		t.Fatalf("conns after register: token %d agent %d", n, m)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.problems) > 0 {
		t.Fatalf("fake CP saw: %v", cp.problems)
	}
}

// TestRegisterPrewarmFailureFallsBack: a failed pre-dial is harmless:
// Register dials for itself and succeeds.
func TestRegisterPrewarmFailureFallsBack(t *testing.T) {
	ts, cp := startServerWithCP(t, nil)
	var warmDials atomic.Int32
	ts.srv.reg.dial = func(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
		if warmDials.Add(1) == 1 {
			return nil, errors.New("scripted pre-dial failure")
		}
		return dialTLS(ctx, addr, cfg)
	}
	c := ts.session(t)
	if d := registerRequired(c, "reg"); !d.GetOk() {
		t.Fatalf("RegisterDone %v", d)
	}
	if warmDials.Load() != 2 || cp.exchanges.Load() != 1 || cp.registers.Load() != 1 {
		t.Fatalf("dials=%d exchanges=%d registers=%d, want 2/1/1", warmDials.Load(), cp.exchanges.Load(), cp.registers.Load())
	}
}

// TestRegisterNoPrewarmWhenInitialized: an initialised container (marker
// present) is registered already; it opens nothing toward the CP.
func TestRegisterNoPrewarmWhenInitialized(t *testing.T) {
	marker := t.TempDir() + "/initialized"
	if err := writeFile(marker, "x\n"); err != nil {
		t.Fatal(err)
	}
	ts, cp := startServerWithCP(t, func(c *Config) { c.InitMarkerPath = marker })
	ts.session(t).hello()
	ts.session(t).hello()
	if n, m := cp.tokenConns.Load(), cp.agentConns.Load(); n != 0 || m != 0 {
		t.Fatalf("initialised container pre-dialed: token %d agent %d", n, m)
	}
}

// TestRegisterPrewarmNoLeak: warm conns never claimed are closed when
// the server exits, leaving no goroutine behind.
func TestRegisterPrewarmNoLeak(t *testing.T) {
	pki := newTestPKI(t)
	cp := startFakeCP(t, pki, "a")
	// After the fake CP is up: its per-conn goroutines still count.
	ignore := goleak.IgnoreCurrent()
	ts := startServerPKI(t, pki, func(c *Config) {
		c.Assertion, c.CPTokenURL, c.CPAgentAddr = "a", cp.tokenURL, cp.agentAddr
	})
	conn := ts.dial(t, ts.pki.cp)
	c := openSession(t, conn)
	eventually(t, 10*time.Second, "pre-dialed CP conns", func() bool {
		return cp.tokenConns.Load() == 1 && cp.agentConns.Load() == 1
	})
	c.close()
	_ = conn.Close()
	ts.cancel()
	select {
	case err := <-ts.serveCh:
		ts.serveCh <- err // for the cleanup's own wait
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	eventually(t, 10*time.Second, "warm conns released", func() bool {
		ts.srv.reg.mu.Lock()
		defer ts.srv.reg.mu.Unlock()
		return ts.srv.reg.warm == nil
	})
	goleak.VerifyNone(t, ignore)
}

// TestRegisterRetriesADeadPrewarmedTokenConn: the pre-dialed token conn
// died with the CP it reached (killed between the warm-up and
// RegisterRequired); the exchange is retried once on a fresh dial
// instead of failing Register.
func TestRegisterRetriesADeadPrewarmedTokenConn(t *testing.T) {
	ts, cp := startServerWithCP(t, nil)
	var dials atomic.Int32
	ts.srv.reg.dial = func(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
		c, err := dialTLS(ctx, addr, cfg)
		if err == nil && dials.Add(1) == 1 {
			c.Close() // the CP behind the warm conn is gone
		}
		return c, err
	}
	c := ts.session(t)
	eventually(t, 10*time.Second, "the pre-dial", func() bool { return dials.Load() == 1 })
	if d := registerRequired(c, "reg"); !d.GetOk() {
		t.Fatalf("RegisterDone %v: a dead pre-dialed conn failed Register", d)
	}
	if dials.Load() != 2 || cp.exchanges.Load() != 1 || cp.registers.Load() != 1 {
		t.Fatalf("dials=%d exchanges=%d registers=%d, want 2/1/1", dials.Load(), cp.exchanges.Load(), cp.registers.Load())
	}
}
