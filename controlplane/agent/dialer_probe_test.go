package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/backoff"
	"github.com/clawker/clawker/internal/logger"
)

// TestDialProbeScheduleStaysFast pins the early-retry schedule: every
// listener probe waits at most connectProbeMax (so a listener that comes
// up between probes is found within ~2ms), the schedule is exponential
// from connectProbeBase, and the probe window covers clawkerd's start →
// listening tail before whole attempts take over. Raising the probe
// ceiling, or letting whole attempts (5ms base) run the early retries,
// fails here.
func TestDialProbeScheduleStaysFast(t *testing.T) {
	if connectProbeMax > 2*time.Millisecond || connectProbeBase > connectProbeMax {
		t.Fatalf("probe schedule too coarse: base %v max %v", connectProbeBase, connectProbeMax)
	}
	if connectProbeWindow < 30*time.Millisecond {
		t.Fatalf("probe window %v shorter than clawkerd's start → listening tail", connectProbeWindow)
	}
	want := connectProbeBase
	for probe := 1; probe <= 200; probe++ {
		ceil := backoff.Ceiling(connectProbeBase, connectProbeMax, probe)
		if ceil != want {
			t.Fatalf("probe %d: ceiling %v, want %v", probe, ceil, want)
		}
		if want < connectProbeMax {
			want = min(2*want, connectProbeMax)
		}
		for i := 0; i < 50; i++ {
			if d := probeBackoff(probe); d < 0 || d > ceil {
				t.Fatalf("probe %d: wait %v outside [0, %v]", probe, d, ceil)
			}
		}
	}
	// The default dialer probes (WithRetry, used by most tests, does not
	// turn it off).
	if env := newDTEnv(t, nil); env.dialer.probeWindow != connectProbeWindow {
		t.Fatalf("default probe window %v, want %v", env.dialer.probeWindow, connectProbeWindow)
	}
}

// refusingDialer refuses the first n probes, then dials for real, and
// counts every call.
type refusingDialer struct {
	mu     sync.Mutex
	refuse int
	calls  int
}

func (r *refusingDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.calls++
	refuse := r.calls <= r.refuse
	r.mu.Unlock()
	if refuse {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", addr)
}

func (r *refusingDialer) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// TestDialProbesUntilListenerThenUsesProbeConn: refusals before clawkerd
// listens are absorbed by TCP probes inside the first attempt (no gRPC
// attempt per refusal), and the accepted probe connection carries the
// Session (gRPC does not dial again).
func TestDialProbesUntilListenerThenUsesProbeConn(t *testing.T) {
	const refusals = 5
	rd := &refusingDialer{refuse: refusals}
	// A window no load can use up: under load the 60ms default can end
	// before the accepting probe, and gRPC then rightly dials itself.
	env := newDTEnv(t, nil, func(d *Dialer) { d.dialTCP, d.probeWindow = rd.dial, time.Minute })
	f := &fakeClawkerd{initialized: true, cmdRunning: true}
	id, _ := env.agent(t, f)
	addRow(t, env.reg, id, f.leaf)
	env.dialer.DialAgent(context.Background(), id)
	c := env.rec.wait(t, id, EventSessionConnected).(SessionConnected)
	if c.Attempts != 1 {
		t.Fatalf("attempts = %d, want 1 (refusals must be probes, not attempts)", c.Attempts)
	}
	if got := rd.count(); got != refusals+1 {
		t.Fatalf("%d TCP dials, want %d probes and no second dial by gRPC", got, refusals+1)
	}
}

// TestDialProbeWindowEndsInNormalAttempts: a listener that never comes up
// is probed only for the window, then retried with whole attempts until
// the budget ends, as before.
func TestDialProbeWindowEndsInNormalAttempts(t *testing.T) {
	rd := &refusingDialer{refuse: 1 << 30}
	env := newDTEnv(t, nil, WithProbeWindow(20*time.Millisecond),
		WithRetry(time.Millisecond, 4*time.Millisecond, 300*time.Millisecond),
		func(d *Dialer) { d.dialTCP = rd.dial })
	id := dtContainerID(t)
	env.targets.set(id, DialTarget{Address: "127.0.0.1:1", AgentName: "dev"})
	env.dialer.DialAgent(context.Background(), id)
	f := env.rec.wait(t, id, EventSessionFailed).(SessionFailed)
	if f.Reason != FailConnectTimeout || f.Attempts < 2 {
		t.Fatalf("SessionFailed = %+v", f)
	}
	if rd.count() < 2 {
		t.Fatalf("%d probes, want the window probed", rd.count())
	}
}

// TestAwaitListenerStopsOnOtherErrors: only "connection refused" means
// "not listening yet"; any other failure ends probing at once.
func TestAwaitListenerStopsOnOtherErrors(t *testing.T) {
	calls := 0
	d := &Dialer{probeWindow: time.Hour, dialTCP: func(context.Context, string) (net.Conn, error) {
		calls++
		return nil, fmt.Errorf("dial: %w", syscall.EHOSTUNREACH)
	}}
	if c := d.awaitListener(context.Background(), "192.0.2.1:1", time.Hour, logger.Nop()); c != nil || calls != 1 {
		t.Fatalf("conn %v after %d probes, want nil after 1", c, calls)
	}
}
