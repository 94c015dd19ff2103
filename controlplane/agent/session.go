package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// registry classification of a live peer.
type classification int

const (
	classMatch classification = iota
	classMiss
	classMismatch
	classError
)

// serve runs an established Session to its end: SessionConnected, trust
// findings, classification (+ Register on Miss), the init plan, then the
// command demultiplexer until ctx is cancelled or the peer goes away.
func (d *Dialer) serve(ctx context.Context, containerID string, e *dialEntry, res *attemptResult, attempts int, log *logger.Logger) {
	t := res.target
	defer func() {
		res.cancel()
		if err := d.closeConn(res.conn); err != nil {
			log.Warn().Str("event", "agent_session_close_failed").Err(err).Msg("closing session connection failed")
		}
	}()

	class, entryErr := d.classify(containerID, res.peer)
	findings := assessPeer(res.peer, containerID, t.AgentName, t.Project)
	d.bus.Publish(SessionConnected{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
		Address: t.Address, Attempts: attempts, PeerAgentFullName: res.peer.agentFullName,
		PeerThumbprint: res.peer.thumbprint, Registered: class == classMatch,
		Trusted: class == classMatch && len(findings) == 0, At: d.now()})
	log.Info().Str("event", "agent_session_connected").Str("address", t.Address).Int("attempts", attempts).
		Bool("initialized", res.ack.GetInitialized()).Bool("cmd_running", res.ack.GetCmdRunning()).
		Msg("session established")

	untrusted := func(reason overseer.UntrustedReason, detail string) {
		log.Warn().Str("event", "agent_untrusted").Str("reason", string(reason)).Str("detail", detail).Msg("agent identity outcome")
		d.bus.Publish(AgentUntrusted{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
			Reason: reason, Detail: detail, At: d.now()})
	}
	for _, f := range findings {
		untrusted(f.reason, f.detail)
	}

	var stream = res.stream
	switch class {
	case classMatch:
		// Steady-state reconnect: AgentRegistered is not re-fired.
	case classMismatch:
		untrusted(overseer.ReasonThumbprintMismatch, "live cert thumbprint differs from the registry row")
	case classError:
		untrusted(overseer.ReasonRegistryError, entryErr.Error())
	case classMiss:
		ok, reason, err := d.register(ctx, stream, res.cancel, registerReplyTimeout, containerID, res.peer)
		if err != nil {
			d.endSession(ctx, containerID, t, err, log)
			return
		}
		d.bus.Publish(AgentRegistered{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
			Ok: ok, Reason: reason, At: d.now()})
		if !ok {
			why := overseer.ReasonRegisterFailed
			if reason == reasonRegistryRowLost {
				why = overseer.ReasonRegistryRowLost
			}
			untrusted(why, reason)
		}
	}

	target := TargetFromHelloAck(InitTarget{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project}, res.ack)
	if d.initExec == nil {
		log.Error().Str("event", "agent_init_executor_unset").Msg("no init executor wired; plan skipped")
	} else if err := d.initExec.Run(ctx, stream, target); err != nil {
		log.Warn().Str("event", "agent_init_run_failed").Err(err).Msg("init plan did not complete")
		// A failed step keeps the Session: the CP may still need it to
		// contain or debug the agent. Transport failures end it below.
	}

	s := newSession(containerID, stream, res.cancel, log)
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
		d.bus.Publish(SessionClosed{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
			Reason: "container stopped", At: d.now()})
		return
	}
	if ctx.Err() != nil {
		log.Info().Str("event", "agent_session_closed").Msg("session torn down")
		d.bus.Publish(SessionClosed{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
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
	d.bus.Publish(SessionBroken{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
		Address: t.Address, Reason: reason, At: d.now()})
}

func (d *Dialer) classify(containerID string, peer peerIdentity) (classification, error) {
	entry, err := d.agents.LookupByContainerID(containerID)
	switch {
	case errors.Is(err, ErrUnknownAgent):
		return classMiss, nil
	case err != nil:
		return classError, fmt.Errorf("registry lookup: %w", err)
	case entry == nil:
		return classMiss, nil
	case peer.present && entry.Thumbprint == peer.thumbprint:
		return classMatch, nil
	default:
		return classMismatch, nil
	}
}

// reasonRegistryRowLost is register's failure reason when clawkerd reports
// success but the registry holds no row for the container.
const reasonRegistryRowLost = "register reported ok but the registry has no row for this container (registry lost?)"

// registerReplyTimeout bounds the wait for RegisterDone. clawkerd gives
// its own token exchange + Register call 30s (its registerTimeout); twice
// that leaves room for a slow CP without letting a wedged clawkerd hold
// the Session in the register step forever.
const registerReplyTimeout = 60 * time.Second

// register sends RegisterRequired and awaits RegisterDone for at most
// timeout; past that it tears the stream down (cancelStream) and fails,
// which ends the Session. A RegisterDone that claims success is
// double-checked against the registry: the row must exist and carry the
// live cert's thumbprint.
func (d *Dialer) register(ctx context.Context, stream clawkerdv1.ClawkerdService_SessionClient, cancelStream context.CancelFunc,
	timeout time.Duration, containerID string, peer peerIdentity) (bool, string, error) {
	const id = "register"
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Recv and Send take no context: ending the stream is what unblocks
	// them. stop runs before cancel (LIFO), so a normal return keeps it.
	stop := context.AfterFunc(rctx, cancelStream)
	defer stop()
	wrap := func(what string, err error) error {
		if errors.Is(rctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("no RegisterDone within %s: %w", timeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := stream.Send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_RegisterRequired{
		RegisterRequired: &clawkerdv1.RegisterRequired{}}}); err != nil {
		return false, "", wrap("send RegisterRequired", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return false, "", wrap("await RegisterDone", err)
		}
		if resp.GetCommandId() != id {
			continue
		}
		if e := resp.GetError(); e != nil {
			return false, fmt.Sprintf("%s: %s", e.GetCode(), e.GetMessage()), nil
		}
		rd := resp.GetRegisterDone()
		if rd == nil {
			continue
		}
		if !rd.GetOk() {
			reason := rd.GetError()
			if reason == "" {
				reason = "register failed"
			}
			return false, reason, nil
		}
		entry, err := d.agents.LookupByContainerID(containerID)
		switch {
		case errors.Is(err, ErrUnknownAgent):
			// clawkerd believes it is registered (it answers ok without
			// calling Register) but the registry has no row: it was lost
			// under a running agent. See overseer.ReasonRegistryRowLost.
			return false, reasonRegistryRowLost, nil
		case err != nil:
			return false, "register reported ok but registry lookup failed: " + err.Error(), nil
		case entry == nil, !peer.present || entry.Thumbprint != peer.thumbprint:
			return false, "register reported ok but the registry row does not carry the live cert " +
				auth.ThumbprintHex(peer.thumbprint), nil
		}
		return true, "", nil
	}
}

// sendStallTimeout bounds one Send on a Session. clawkerd's recv loop never
// blocks on a command, so a Send that makes no progress this long means
// the peer or the path is wedged (the HTTP/2 window never reopens).
const sendStallTimeout = 20 * time.Second

// killReplyTimeout bounds the wait for clawkerd's Done/Error after a
// cancelled or closed exec's SIGKILL went out; past it the handle is
// failed locally so its caller is never stuck on an unresponsive peer.
const killReplyTimeout = 10 * time.Second

// errSendStalled is how a Session the stall watchdog tore down ends.
var errSendStalled = errors.New("session send stalled; torn down")

// session is the post-init demultiplexer: it alone calls Recv, routes
// each Response to its ExecHandle by command_id, and serialises Send.
type session struct {
	containerID string
	stream      clawkerdv1.ClawkerdService_SessionClient
	teardown    context.CancelFunc // cancels the stream: run and every Send end
	log         *logger.Logger
	stall       time.Duration // sendStallTimeout; tests shorten it
	killGrace   time.Duration // killReplyTimeout; tests shorten it

	sendSem chan struct{} // cap 1: a lock a waiter can give up on
	gone    chan struct{} // closed when run has ended
	seq     atomic.Uint64
	stalled atomic.Bool // the watchdog tore the Session down

	mu      sync.Mutex
	handles map[string]*ExecHandle
	ended   bool
}

func newSession(containerID string, stream clawkerdv1.ClawkerdService_SessionClient, teardown context.CancelFunc, log *logger.Logger) *session {
	return &session{containerID: containerID, stream: stream, teardown: teardown, log: log,
		stall: sendStallTimeout, killGrace: killReplyTimeout, sendSem: make(chan struct{}, 1), gone: make(chan struct{}),
		handles: map[string]*ExecHandle{}}
}

// send serialises Sends. A waiter gives up when its ctx ends or the
// Session is gone. A Send stuck for s.stall tears the whole Session down:
// that unblocks it and every waiter, fails every handle, and makes
// clawkerd SIGKILL the Session's commands (transport loss), so nothing,
// least of all the SIGKILL of a cancelled exec, waits on a stuck stream
// forever.
func (s *session) send(ctx context.Context, c *clawkerdv1.Command) error {
	select {
	case s.sendSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.gone:
		return fmt.Errorf("send to %s: %w", s.containerID, ErrNoSession)
	}
	defer func() { <-s.sendSem }()
	watchdog := time.AfterFunc(s.stall, func() {
		defer s.recoverLog("send_watchdog")
		s.log.Warn().Str("event", "agent_session_send_stalled").Str("command_id", c.GetCommandId()).
			Dur("stalled_for", s.stall).Msg("send made no progress; tearing the session down")
		s.stalled.Store(true)
		s.teardown()
	})
	defer watchdog.Stop()
	return s.stream.Send(c)
}

// recoverLog is deferred by every goroutine the session starts.
func (s *session) recoverLog(where string) {
	if r := recover(); r != nil {
		s.log.Error().Str("event", "agent_session_panic").Str("where", where).Str("panic", fmt.Sprint(r)).Msg("recovered")
	}
}

// abandon fails h locally (its command may never answer) and forgets it.
func (s *session) abandon(h *ExecHandle, msg string) {
	s.mu.Lock()
	if s.handles[h.id] == h {
		delete(s.handles, h.id)
	}
	s.mu.Unlock()
	h.finish(&clawkerdv1.Response{CommandId: h.id, Payload: &clawkerdv1.Response_Error{
		Error: &clawkerdv1.Error{Code: clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, Message: msg}}})
}

// run pumps responses until the stream ends, then fails every open
// handle with a synthetic IO_ERROR so no consumer waits forever.
func (s *session) run() (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Str("event", "agent_session_panic").Str("panic", fmt.Sprint(r)).Msg("recovered")
			err = fmt.Errorf("session panic: %v", r)
		}
		s.mu.Lock()
		s.ended = true
		close(s.gone)
		hs := s.handles
		s.handles = map[string]*ExecHandle{}
		s.mu.Unlock()
		for _, h := range hs {
			h.finish(&clawkerdv1.Response{CommandId: h.id, Payload: &clawkerdv1.Response_Error{
				Error: &clawkerdv1.Error{Code: clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, Message: "session ended"}}})
		}
	}()
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			if s.stalled.Load() {
				return errSendStalled
			}
			if status.Code(err) == codes.Canceled {
				return context.Canceled
			}
			return err
		}
		id := resp.GetCommandId()
		s.mu.Lock()
		h := s.handles[id]
		terminal := resp.GetDone() != nil || resp.GetError() != nil
		if h != nil && terminal {
			delete(s.handles, id)
		}
		s.mu.Unlock()
		if h == nil {
			s.log.Debug().Str("event", "agent_session_stray_response").Str("command_id", id).Msg("no handle for response")
			continue
		}
		if terminal {
			h.finish(resp)
		} else {
			h.push(resp)
		}
	}
}

func (s *session) exec(ctx context.Context, cmd *clawkerdv1.ShellCommand) (*ExecHandle, error) {
	if cmd == nil || len(cmd.GetStages()) == 0 {
		return nil, errors.New("exec: command has no stages")
	}
	id := fmt.Sprintf("exec/%d", s.seq.Add(1))
	// Every exec is flow controlled (see ExecOutputWindow); the caller's
	// message is not modified.
	cmd = proto.Clone(cmd).(*clawkerdv1.ShellCommand)
	cmd.OutputWindow = ExecOutputWindow
	h := newExecHandle(ctx, id, s, ExecOutputWindow)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		h.close() // ends its pump
		return nil, fmt.Errorf("exec in %s: %w", s.containerID, ErrNoSession)
	}
	s.handles[id] = h
	s.mu.Unlock()
	if err := s.send(ctx, &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Shell{Shell: cmd}}); err != nil {
		s.mu.Lock()
		delete(s.handles, id)
		s.mu.Unlock()
		h.close()
		return nil, fmt.Errorf("exec send: %w", err)
	}
	// Cancelling the caller's ctx kills the command; its Done/Error still
	// arrives and closes the handle (or the handle fails locally when the
	// kill cannot be sent).
	h.onCancel(ctx)
	return h, nil
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
