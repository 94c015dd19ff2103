package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	d.bus.Publish(SessionConnected{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
		Address: t.Address, Attempts: attempts, PeerAgentFullName: res.peer.agentFullName,
		PeerThumbprint: res.peer.thumbprint, Registered: class == classMatch, At: d.now()})
	log.Info().Str("event", "agent_session_connected").Str("address", t.Address).Int("attempts", attempts).
		Bool("initialized", res.ack.GetInitialized()).Bool("cmd_running", res.ack.GetCmdRunning()).
		Msg("session established")

	untrusted := func(reason overseer.UntrustedReason, detail string) {
		log.Warn().Str("event", "agent_untrusted").Str("reason", string(reason)).Str("detail", detail).Msg("agent identity outcome")
		d.bus.Publish(AgentUntrusted{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
			Reason: reason, Detail: detail, At: d.now()})
	}
	for _, f := range assessPeer(res.peer, containerID, t.AgentName, t.Project) {
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
		ok, reason, err := d.register(ctx, stream, containerID, res.peer)
		if err != nil {
			d.endSession(ctx, containerID, t, err, log)
			return
		}
		d.bus.Publish(AgentRegistered{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
			Ok: ok, Reason: reason, At: d.now()})
		if !ok {
			untrusted(overseer.ReasonRegisterFailed, reason)
		}
	}

	target := InitTarget{ContainerID: containerID, AgentName: t.AgentName, Project: t.Project,
		Initialized: res.ack.GetInitialized(), CmdRunning: res.ack.GetCmdRunning()}
	if d.initExec == nil {
		log.Error().Str("event", "agent_init_executor_unset").Msg("no init executor wired; plan skipped")
	} else if err := d.initExec.Run(ctx, stream, target); err != nil {
		log.Warn().Str("event", "agent_init_run_failed").Err(err).Msg("init plan did not complete")
		// A failed step keeps the Session: the CP may still need it to
		// contain or debug the agent. Transport failures end it below.
	}

	s := newSession(containerID, stream, log)
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
func (d *Dialer) endSession(ctx context.Context, containerID string, t DialTarget, err error, log *logger.Logger) {
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

// register sends RegisterRequired and awaits RegisterDone. A RegisterDone
// that claims success is double-checked against the registry: the row
// must exist and carry the live cert's thumbprint.
func (d *Dialer) register(ctx context.Context, stream clawkerdv1.ClawkerdService_SessionClient, containerID string, peer peerIdentity) (bool, string, error) {
	const id = "register"
	if err := stream.Send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_RegisterRequired{
		RegisterRequired: &clawkerdv1.RegisterRequired{}}}); err != nil {
		return false, "", fmt.Errorf("send RegisterRequired: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return false, "", fmt.Errorf("await RegisterDone: %w", err)
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
		case err != nil:
			return false, "register reported ok but registry lookup failed: " + err.Error(), nil
		case entry == nil, !peer.present || entry.Thumbprint != peer.thumbprint:
			return false, "register reported ok but the registry row does not carry the live cert " +
				auth.ThumbprintHex(peer.thumbprint), nil
		}
		return true, "", nil
	}
}

// session is the post-init demultiplexer: it alone calls Recv, routes
// each Response to its ExecHandle by command_id, and serialises Send.
type session struct {
	containerID string
	stream      clawkerdv1.ClawkerdService_SessionClient
	log         *logger.Logger

	sendMu sync.Mutex
	seq    atomic.Uint64

	mu      sync.Mutex
	handles map[string]*ExecHandle
	ended   bool
}

func newSession(containerID string, stream clawkerdv1.ClawkerdService_SessionClient, log *logger.Logger) *session {
	return &session{containerID: containerID, stream: stream, log: log, handles: map[string]*ExecHandle{}}
}

func (s *session) send(c *clawkerdv1.Command) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(c)
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
	h := newExecHandle(id, s)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return nil, fmt.Errorf("exec in %s: %w", s.containerID, ErrNoSession)
	}
	s.handles[id] = h
	s.mu.Unlock()
	if err := s.send(&clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Shell{Shell: cmd}}); err != nil {
		s.mu.Lock()
		delete(s.handles, id)
		s.mu.Unlock()
		h.close()
		return nil, fmt.Errorf("exec send: %w", err)
	}
	// Cancelling the caller's ctx kills the command; its Done/Error still
	// arrives and closes the handle.
	stop := context.AfterFunc(ctx, func() { _ = h.Signal(int32(syscall.SIGKILL)) })
	go func() {
		<-h.finished
		stop()
	}()
	return h, nil
}
