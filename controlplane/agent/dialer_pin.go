package agent

import (
	"context"
	"errors"

	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// ErrSessionUntrusted: the Session may not run the command. Its peer failed
// the Dialer's cert pin (kept for observation only, takes no commands), or
// it is not trusted and the caller did not allow untrusted.
var ErrSessionUntrusted = errors.New("session is not trusted")

// pinned reports whether a handshake's findings pass the Dialer's pin: a
// leaf that chains to the clawker CA and names, in
// urn:clawker:container:<id>, the very container that was dialed. Anything
// that answers at a container's address without that proof (an impostor
// after `clawker rm`, a host that took over the IP, another agent's stolen
// cert) gets no Register, no init step, no AgentReady and no Exec.
func pinned(findings []trustFinding) bool {
	for _, f := range findings {
		if f.reason == overseer.ReasonChainInvalid || f.reason == overseer.ReasonContainerMismatch {
			return false
		}
	}
	return true
}

// observe serves a Session that failed the pin. The permissive dial still
// pays off: the worldview shows the peer (connected, untrusted, with its
// reasons), the containment policy can act on it, and its end is
// reported. Nothing is sent on it after the Hello; responses are dropped.
func (d *Dialer) observe(ctx context.Context, containerID string, e *dialEntry, res *attemptResult, log *logger.Logger) {
	log.Warn().Str("event", "agent_session_observe_only").Str("address", res.target.Address).
		Msg("peer failed the cert pin; session kept for observation only (no register, init or exec)")
	s := newSession(containerID, res.stream, res.cancel, log)
	d.mu.Lock()
	e.sess, e.observe = s, true
	d.mu.Unlock()
	err := s.run()
	d.mu.Lock()
	e.sess, e.observe = nil, false
	d.mu.Unlock()
	d.endSession(ctx, containerID, res.target, err, log)
}
