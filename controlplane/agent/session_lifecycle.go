package agent

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// The Dialer's side of one Session's life: from an established stream
// through trust findings, registry classification (and Register), the
// init plan, and the demultiplexer (session.go), to how it ended.

// serve runs an established Session to its end: SessionConnected, trust
// findings, classification (+ Register on Miss), the init plan, then the
// command demultiplexer until ctx is cancelled or the peer goes away.
func (d *Dialer) serve(ctx context.Context, containerID string, e *dialEntry, res *attemptResult, attempts int, log *logger.Logger) {
	t := res.target
	d.mu.Lock()
	e.established = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		e.established = false
		d.mu.Unlock()
		res.cancel()
		d.closeSessionConn(containerID, res, attempts, log)
	}()

	class, entryErr := d.classify(containerID, res.peer)
	findings := assessPeer(res.peer, containerID, t.AgentName, t.Project)
	d.bus.Publish(SessionConnected{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
		Address: t.Address, Attempts: attempts, PeerAgentFullName: res.peer.agentFullName,
		PeerThumbprint: res.peer.thumbprint, Registered: class == classMatch,
		Trusted: class == classMatch && len(findings) == 0, At: d.now()})
	log.Info().Str("event", "agent_session_connected").Str("address", t.Address).Int("attempts", attempts).
		Bool("initialized", res.ack.GetInitialized()).Bool("cmd_running", res.ack.GetCmdRunning()).
		Msg("session established")

	untrusted := func(reason overseer.UntrustedReason, detail string) {
		log.Warn().Str("event", "agent_untrusted").Str("reason", string(reason)).Str("detail", detail).Msg("agent identity outcome")
		d.bus.Publish(AgentUntrusted{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
			Reason: reason, Detail: detail, At: d.now()})
	}
	for _, f := range findings {
		untrusted(f.reason, f.detail)
	}
	if !pinned(findings) {
		d.observe(ctx, containerID, e, res, log)
		return
	}

	// trusted: a registry Match, or a successful Register, with no
	// findings; Exec refuses anything else unless allowed (session_trust.go).
	trusted := len(findings) == 0 && class == classMatch
	var stream = res.stream
	if d.wrapStream != nil {
		stream = d.wrapStream(containerID, stream, res.cancel)
	}
	switch class {
	case classMatch:
		// Steady-state reconnect: AgentRegistered is not re-fired.
	case classMismatch:
		untrusted(overseer.ReasonThumbprintMismatch, "live cert thumbprint differs from the registry row")
	case classError:
		untrusted(overseer.ReasonRegistryError, entryErr.Error())
	case classMiss:
		ok, reason, err := d.registerRetrying(ctx, stream, res.cancel, containerID, res.peer, log)
		if err != nil {
			// The spec's AgentRegistered fires on failure too. A teardown
			// (container stopping, CP shutdown) is no Register outcome.
			if ctx.Err() == nil {
				d.bus.Publish(AgentRegistered{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
					Ok: false, Reason: err.Error(), At: d.now()})
				untrusted(registerErrReason(err), err.Error())
			}
			d.endSession(ctx, containerID, t, err, log)
			return
		}
		d.bus.Publish(AgentRegistered{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
			Ok: ok, Reason: reason, At: d.now()})
		trusted = ok && len(findings) == 0
		if !ok {
			why := registerReplyReason(reason)
			switch {
			case reason == reasonRegistryRowLost:
				why = overseer.ReasonRegistryRowLost
			case strings.HasPrefix(reason, reasonRegistryLookupFailed):
				why = overseer.ReasonRegistryError // the CP's own registry, not the agent
			}
			untrusted(why, reason)
		}
	}

	// One receiver for the rest of the Session: the plan's bounded waits,
	// then the demultiplexer (see recvPump).
	stream = newRecvPump(stream)
	target := TargetFromHelloAck(InitTarget{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project}, res.ack)
	if d.initExec == nil {
		log.Error().Str("event", "agent_init_executor_unset").Msg("no init executor wired; plan skipped")
	} else if err := d.initExec.Run(ctx, stream, target); err != nil {
		log.Warn().Str("event", "agent_init_run_failed").Err(err).Msg("init plan did not complete")
		// A failed step keeps the Session: the CP may still need it to
		// contain or debug the agent. Transport failures end it below.
	}

	s := newSession(containerID, stream, res.cancel, log)
	s.flowControl = clawkerdv1.HasCapability(res.ack, clawkerdv1.CapFlowControl)
	s.stdinCredit = clawkerdv1.HasCapability(res.ack, clawkerdv1.CapStdinCredit)
	s.ack = res.ack // read by Exec for its defaults (session_ack.go)
	s.trusted = trusted
	s.enableCreds(ctx, d.creds, res.ack)
	d.mu.Lock()
	e.sess = s
	d.mu.Unlock()
	err := s.run()
	d.mu.Lock()
	e.sess = nil
	d.mu.Unlock()
	d.endSession(ctx, containerID, t, err, log)
}

// endSession publishes how a Session ended: SessionClosed on intentional
// teardown (ctx cancelled by CancelDial or shutdown), SessionBroken
// otherwise.
//
// A Session the peer ends because its container is stopping (docker
// stop: clawkerd forwards SIGTERM, the user CMD exits, clawkerd closes
// its Sessions and exits) reaches here slightly before the die event
// cancels ctx. That is a teardown, not a fault, so before calling an end
// broken it waits up to stopEvidenceWait for evidence of a stop: ctx
// cancelled by CancelDial, or the container no longer running.
func (d *Dialer) endSession(ctx context.Context, containerID string, t DialTarget, err error, log *logger.Logger) {
	if ctx.Err() == nil && d.containerStopping(ctx, containerID) && ctx.Err() == nil {
		log.Info().Str("event", "agent_session_closed").Msg("session ended by the stopping container")
		d.bus.Publish(SessionClosed{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
			Reason: "container stopped", At: d.now()})
		return
	}
	if ctx.Err() != nil {
		log.Info().Str("event", "agent_session_closed").Msg("session torn down")
		d.bus.Publish(SessionClosed{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
			Reason: "cancelled", At: d.now()})
		return
	}
	reason := "peer closed"
	if err != nil && !errors.Is(err, io.EOF) {
		reason = err.Error()
		if st, ok := status.FromError(err); ok {
			reason = st.Code().String() + ": " + st.Message()
		}
	}
	log.Warn().Str("event", "agent_session_broken").Str("reason", reason).Msg("session ended")
	d.bus.Publish(SessionBroken{Subject: overseer.Subject{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project},
		Address: t.Address, Reason: reason, At: d.now()})
}

// Stop-evidence wait after a peer-ended Session (see endSession). clawkerd
// exits within milliseconds of closing its Sessions, so two seconds is
// ample; a genuinely broken Session is reported that much later.
const (
	stopEvidenceWait = 2 * time.Second
	stopEvidencePoll = 50 * time.Millisecond
)

// containerStopping reports whether, within stopEvidenceWait, ctx is
// cancelled (CancelDial on die/stop) or the resolver finds the container
// not running or gone. Resolver errors of other kinds are not evidence.
func (d *Dialer) containerStopping(ctx context.Context, containerID string) bool {
	deadline := time.NewTimer(stopEvidenceWait)
	defer deadline.Stop()
	tick := time.NewTicker(stopEvidencePoll)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, stopEvidenceWait)
		_, err := d.resolve(rctx, containerID)
		cancel()
		if ctx.Err() != nil || errors.Is(err, ErrContainerNotRunning) || errors.Is(err, ErrContainerGone) {
			return true
		}
		select {
		case <-ctx.Done():
			return true
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}
