package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/logger"
)

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
	// flowControl: the peer announced flow-control/v1, so exec sets an
	// output window and returns credit. Without it neither goes on the
	// wire: an older clawkerd answers OutputCredit with INVALID_REQUEST.
	flowControl bool
	// stdinCredit: the peer announced stdin-credit/v1, so exec sets a
	// stdin window and paces Stdin by the StdinCredit it returns.
	stdinCredit bool

	sendSem chan struct{} // cap 1: a lock a waiter can give up on
	gone    chan struct{} // closed when run has ended
	seq     atomic.Uint64
	stalled atomic.Bool // the watchdog tore the Session down

	mu      sync.Mutex
	handles map[string]*ExecHandle
	ended   bool

	ack     *clawkerdv1.HelloAck // set before the session is published, then read-only
	trusted bool                 // likewise: registry Match or Register ok, no findings
	creds   CredAnswerer         // set by enableCreds before run, then read-only
	credSem chan struct{}        // bounds answers in flight (session_creds.go)
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
		if cr := resp.GetCredRequest(); cr != nil {
			s.answerCred(id, cr)
			continue
		}
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
		if c := resp.GetStdinCredit(); c != nil {
			h.addStdinCredit(c.GetBytes())
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
	if cmd == nil || (len(cmd.GetStages()) == 0 && !cmd.GetAttachUserCmd()) { // an attach has none
		return nil, errors.New("exec: command has no stages")
	}
	id := fmt.Sprintf("exec/%d", s.seq.Add(1))
	// Every exec to a peer that announced flow control is flow controlled
	// (see ExecOutputWindow); the caller's message is not modified.
	cmd = proto.Clone(cmd).(*clawkerdv1.ShellCommand)
	window := 0
	if s.flowControl {
		window = ExecOutputWindow
	}
	cmd.OutputWindow = uint32(window)
	h := newExecHandle(ctx, id, s, window)
	if s.stdinCredit {
		cmd.StdinWindow = ExecStdinWindow
		h.stdinWindow, h.stdinCredit = ExecStdinWindow, ExecStdinWindow
	}
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
