package agent

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/clawker/clawker/internal/backoff"
	"github.com/clawker/clawker/internal/logger"
)

// probeBackoff is the wait before listener probe number probe (1-based).
func probeBackoff(probe int) time.Duration {
	return backoff.FullJitter(connectProbeBase, connectProbeMax, probe)
}

// awaitListener probes address with plain TCP connects until one is
// accepted (returned, to carry the Session), a probe fails with anything
// but "connection refused" (the listener is not the problem), the probe
// window (cut to the cycle's remaining budget) ends, or ctx is done; in
// those last cases it returns nil and the caller makes a normal attempt.
// A refused probe costs a SYN/RST pair, far less than a gRPC attempt, so
// probing every ~1ms stays cheap.
func (d *Dialer) awaitListener(ctx context.Context, address string, budget time.Duration, log *logger.Logger) net.Conn {
	window := min(d.probeWindow, budget)
	if window <= 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	for probe := 1; ; probe++ {
		c, err := d.dialTCP(pctx, address)
		if err == nil {
			if probe > 1 {
				log.Debug().Str("event", "agent_dial_probe_accepted").Int("probes", probe).Msg("listener came up")
			}
			return c
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		timer := time.NewTimer(probeBackoff(probe))
		select {
		case <-pctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// handoff gives a probe's accepted connection to gRPC's first dial.
type handoff struct {
	mu   sync.Mutex
	conn net.Conn
}

func (h *handoff) dial(fallback func(context.Context, string) (net.Conn, error)) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		h.mu.Lock()
		c := h.conn
		h.conn = nil
		h.mu.Unlock()
		if c != nil {
			return c, nil
		}
		return fallback(ctx, addr)
	}
}

// closeUntaken closes the connection if gRPC never dialed.
func (h *handoff) closeUntaken() {
	h.mu.Lock()
	c := h.conn
	h.conn = nil
	h.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}
