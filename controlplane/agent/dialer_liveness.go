package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/clawker/clawker/controlplane/overseer"
)

// Liveness of a Session's path. gRPC's client keepalive cannot ping more
// often than every 10 s (it raises a shorter Time to that floor), so the
// fast detection is the kernel's: TCP keepalive probes after
// tcpKeepaliveIdle of silence, every tcpKeepaliveInterval, and gRPC sets
// TCP_USER_TIMEOUT to keepaliveTimeout, so a path whose probes (or data)
// go unacknowledged that long is reset: a dead path ends the Session in
// about idle + timeout (2-3 s). Probes are answered by the peer's kernel,
// so a busy or starved clawkerd is not mistaken for a dead one.
const (
	tcpKeepaliveIdle     = time.Second
	tcpKeepaliveInterval = time.Second
	tcpKeepaliveCount    = 2
)

// setSessionKeepalive arms TCP keepalive on a Session connection.
func setSessionKeepalive(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: tcpKeepaliveIdle,
			Interval: tcpKeepaliveInterval, Count: tcpKeepaliveCount})
	}
}

// keepaliveDialer wraps a dial function so every connection it returns
// has TCP keepalive armed.
func keepaliveDialer(dial func(context.Context, string) (net.Conn, error)) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dial(ctx, addr)
		if err == nil {
			setSessionKeepalive(c)
		}
		return c, err
	}
}

// NetworkChanged is called when containerID joined or left a network
// (Docker network events). A path that changed is redialed at once: a
// live Session whose address no longer resolves is torn down (its execs
// fail now rather than hang until keepalive notices), and a container
// without a live Session is dialed now rather than at the next reconcile
// or backoff. A change that leaves the Session's address intact (another
// network) costs one inspect and nothing else.
func (d *Dialer) NetworkChanged(ctx context.Context, containerID, why string) {
	snapshot := func() (e *dialEntry, live bool, addr string) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if e = d.dialing[containerID]; e != nil {
			live, addr = e.sess != nil || e.established, e.address
		}
		return e, live, addr
	}
	log := d.log.With("container_id", containerID)
	rctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	t, err := d.resolve(rctx, containerID) // t's names are set even without an address
	cancel()
	// Taken after the inspect: a dial that connected meanwhile (its
	// Session still registering or initializing) is on the new path.
	e, live, addr := snapshot()
	switch {
	case errors.Is(err, ErrContainerNotRunning) || errors.Is(err, ErrContainerGone):
		// A stop or start detaches or attaches networks too; the
		// lifecycle events own those Sessions.
		return
	case live && err == nil && t.Address == addr:
		log.Debug().Str("event", "agent_network_change_ignored").Str("why", why).Msg("session path unchanged")
		return
	}
	log.Info().Str("event", "agent_redial").Str("why", why).Bool("had_session", live).Msg("network changed; redialing")
	if e != nil {
		e.cancel()
		<-e.done
		if live {
			d.bus.Publish(SessionBroken{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
				Address: addr, Reason: why, At: d.now()})
		}
	}
	d.DialAgent(ctx, containerID)
}

// waitSession waits up to wait for the container to have a live Session
// (a redial in progress); Exec's WaitForSession option.
func (d *Dialer) waitSession(ctx context.Context, containerID string, wait time.Duration) error {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(execWaitPoll)
	defer tick.Stop()
	for {
		d.mu.Lock()
		live := false
		if e := d.dialing[containerID]; e != nil {
			live = e.sess != nil || e.observe
		}
		d.mu.Unlock()
		if live {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("exec in %s: waited %s: %w", containerID, wait, ErrNoSession)
		case <-tick.C:
		}
	}
}

// execWaitPoll is how often ExecWait looks for a live Session.
const execWaitPoll = 20 * time.Millisecond
