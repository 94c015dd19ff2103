package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/backoff"
)

// One dial cycle: dedup, cancel, retry budget, giving up, the listener
// probe, and how a Session ends.

func TestDialDedup50Concurrent(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env.dialer.DialAgent(context.Background(), id)
		}()
	}
	wg.Wait()
	env.rec.wait(t, id, EventInitCompleted)
	// Later calls while the Session is live are no-ops too.
	for i := 0; i < 10; i++ {
		env.dialer.DialAgent(context.Background(), id)
	}
	if n := f.sessions.Load(); n != 1 {
		t.Fatalf("%d sessions opened, want 1", n)
	}
	count := 0
	for _, n := range env.rec.names(id) {
		if n == EventSessionConnecting {
			count++
		}
	}
	if count != 1 || len(env.dialer.Sessions()) != 1 {
		t.Fatalf("SessionConnecting x%d, sessions %v", count, env.dialer.Sessions())
	}
}

func TestCancelDialDuringRetry(t *testing.T) {
	env := newDTEnv(t, nil, WithRetry(time.Millisecond, 2*time.Millisecond, time.Hour))
	id := dtContainerID(t)
	env.targets.set(id, DialTarget{Address: "127.0.0.1:1", AgentName: "dev"}) // nothing listens
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventSessionConnecting)
	env.dialer.CancelDial(id) // synchronous
	if len(env.dialer.Sessions()) != 0 {
		t.Fatal("dial entry survived CancelDial")
	}
	if env.rec.has(id, EventSessionFailed) || env.rec.has(id, EventSessionBroken) {
		t.Fatalf("cancel must not report failure: %v", env.rec.names(id))
	}
	env.rec.wait(t, id, EventSessionClosed)
	env.dialer.CancelDial(id) // no-op
	// A fresh DialAgent after cancel dials again.
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "redial", func() bool { return len(env.dialer.Sessions()) == 1 })
}

func TestDialTotalTimeout(t *testing.T) {
	env := newDTEnv(t, nil, WithRetry(time.Millisecond, 4*time.Millisecond, 150*time.Millisecond))
	id := dtContainerID(t)
	env.targets.set(id, DialTarget{Address: "127.0.0.1:1", AgentName: "dev"})
	env.dialer.DialAgent(context.Background(), id)
	f := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if f.Reason != FailConnectTimeout || f.Attempts < 2 {
		t.Fatalf("SessionFailed = %+v", f)
	}
	dtWait(t, "entry removed", func() bool { return len(env.dialer.Sessions()) == 0 })
}

func TestDialContainerGoneStopsRetrying(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	env.targets.fail(id, fmt.Errorf("inspect: %w", ErrContainerGone))
	env.dialer.DialAgent(context.Background(), id)
	f := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if f.Reason != FailContainerGone || f.Attempts != 1 {
		t.Fatalf("SessionFailed = %+v", f)
	}
	if env.rec.has(id, EventSessionConnecting) {
		t.Fatal("no SessionConnecting before a successful inspect")
	}
	id2 := dtContainerID(t)
	env.targets.fail(id2, ErrContainerNotRunning)
	env.dialer.DialAgent(context.Background(), id2)
	if f := env.rec.wait(t, id2, EventSessionFailed).(SessionFailed); f.Reason != FailContainerNotRunning {
		t.Fatalf("SessionFailed = %+v", f)
	}
}

func TestDialFDLeakCeiling(t *testing.T) {
	env := newDTEnv(t, nil, WithRetry(time.Millisecond, 2*time.Millisecond, time.Hour))
	var closes int
	var mu sync.Mutex
	env.dialer.closeConn = func(c *grpc.ClientConn) error {
		_ = c.Close() // really close, report failure anyway
		mu.Lock()
		closes++
		mu.Unlock()
		return errors.New("close: bad file descriptor")
	}
	id := dtContainerID(t)
	env.targets.set(id, DialTarget{Address: "127.0.0.1:1", AgentName: "dev"})
	env.dialer.DialAgent(context.Background(), id)
	f := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if f.Reason != FailFDLeakCeiling || f.Attempts != closeErrCeiling {
		t.Fatalf("SessionFailed = %+v", f)
	}
	mu.Lock()
	defer mu.Unlock()
	if closes != closeErrCeiling {
		t.Fatalf("%d closes, want %d", closes, closeErrCeiling)
	}
}

func TestDialConnectsOnceListenerComesUp(t *testing.T) {
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	leaf := env.pki.agentLeaf(t, "proj", "dev", id)
	addRow(t, env.reg, id, leaf)
	// Resolve fails (no IP yet) until the listener is up.
	env.targets.fail(id, errors.New("no agent-network address yet"))
	env.dialer.DialAgent(context.Background(), id)
	dtWait(t, "a few failed attempts", func() bool { return env.targets.calls(id) >= 3 })
	startFake(t, env.pki, f, leaf)
	env.targets.mu.Lock()
	delete(env.targets.e, id)
	env.targets.m[id] = DialTarget{Address: f.addr, AgentName: "dev", Project: "proj"}
	env.targets.mu.Unlock()
	c := env.rec.wait(t, id, EventSessionConnected).(SessionConnected)
	if c.Attempts < 2 {
		t.Fatalf("attempts = %d, want retries before the listener came up", c.Attempts)
	}
}

func TestPeerCloseIsSessionBroken(t *testing.T) {
	env := newDTEnv(t, nil)
	f := &fakeClawkerd{initialized: true, closeAfterInit: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	env.dialer.DialAgent(context.Background(), id)
	b := env.rec.wait(t, id, EventSessionBroken).(SessionBroken)
	if b.Reason == "" || env.rec.has(id, EventSessionClosed) {
		t.Fatalf("broken = %+v events %v", b, env.rec.names(id))
	}
	dtWait(t, "entry removed", func() bool { return len(env.dialer.Sessions()) == 0 })
	if a, _ := env.bus.Agent(id); a.Session != overseer.SessionStatusBroken {
		t.Fatalf("worldview session = %s", a.Session)
	}
}

func TestDialerBackoffBounds(t *testing.T) {
	if connectMaxBackoff > 100*time.Millisecond || connectBaseBackoff > 10*time.Millisecond {
		t.Fatalf("backoff constants too coarse for tens-of-ms connect: base %v cap %v", connectBaseBackoff, connectMaxBackoff)
	}
	for attempt := 1; attempt <= 30; attempt++ {
		limit := connectBaseBackoff << (attempt - 1)
		if attempt > 10 || limit > connectMaxBackoff {
			limit = connectMaxBackoff
		}
		var maxSeen time.Duration
		for i := 0; i < 200; i++ {
			d := backoff.FullJitter(connectBaseBackoff, connectMaxBackoff, attempt)
			if d < 0 || d > limit {
				t.Fatalf("attempt %d: %v outside [0, %v]", attempt, d, limit)
			}
			if d > maxSeen {
				maxSeen = d
			}
		}
		if maxSeen == 0 {
			t.Fatalf("attempt %d: no jitter spread", attempt)
		}
	}
}
