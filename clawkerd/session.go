package clawkerd

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// session is one open Session stream. The recv loop runs on its own
// goroutine so the handler can end the stream on an exit request even
// while Recv is blocked; command handlers run on tracked goroutines.
type session struct {
	srv    *Server
	stream clawkerdv1.ClawkerdService_SessionServer
	log    *logger.Logger
	ctx    context.Context
	cancel context.CancelFunc

	sendMu sync.Mutex
	// recvEnded is closed when the recv loop returned: no OutputCredit can
	// arrive any more (the CP half-closed or the transport broke).
	recvEnded chan struct{}

	mu      sync.Mutex
	closing bool
	live    map[string]*shellCmd // value nil for non-shell commands
	wg      sync.WaitGroup

	// recent holds the ids of the last recentMax finished shell commands,
	// so an OutputCredit racing a command's Done is ignored rather than
	// answered with UNKNOWN_COMMAND_ID.
	recent     map[string]struct{}
	recentRing []string
	recentNext int
}

// recentMax bounds the finished-command ids a Session remembers.
const recentMax = 256

// Session implements clawkerdv1.ClawkerdServiceServer.
func (s *Server) Session(stream clawkerdv1.ClawkerdService_SessionServer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Str("event", "panic_recovered").Str("where", "session").Interface("panic", r).Msg("session handler panicked")
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	leaf, err := peerLeaf(stream.Context())
	if err == nil {
		err = checkControlPlanePeer(leaf)
	}
	if err != nil {
		s.log.Warn().Str("event", "session_rejected").Err(err).Msg("session peer rejected")
		return status.Error(codes.PermissionDenied, "permission denied")
	}
	thumb := auth.ThumbprintHex(auth.Thumbprint(leaf))
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // server exit ends every Session
	defer stop()
	sess := &session{
		srv: s, stream: stream, ctx: ctx, cancel: cancel,
		log:       s.log.With("peer_thumbprint", thumb),
		live:      map[string]*shellCmd{},
		recent:    map[string]struct{}{},
		recvEnded: make(chan struct{}),
	}
	if !s.initialized() {
		// Re-warm if the warm-up from startup expired before a CP came.
		s.reg.prewarm(s.ctx)
	}
	started := time.Now()
	sess.log.Info().Str("event", "session_started").Str("peer_cn", leaf.Subject.CommonName).Msg("session started")
	s.sessions.Add(1)
	defer s.sessions.Add(-1)

	recvDone := make(chan error, 1)
	go func() {
		defer recoverLog(sess.log, "session_recv")
		defer close(sess.recvEnded)
		recvDone <- sess.recvLoop()
	}()
	var reason string
	select {
	case err := <-recvDone:
		if errors.Is(err, io.EOF) {
			// CP half-closed: let live commands finish and reply.
			reason = "peer_closed"
		} else {
			reason = "transport"
			cancel()
		}
	case <-ctx.Done():
		reason = "cancelled"
	}
	sess.mu.Lock()
	sess.closing = true
	sess.mu.Unlock()
	sess.wg.Wait()
	s.creds.drop(sess)
	cancel()
	sess.log.Info().Str("event", "session_ended").Str("peer_cn", leaf.Subject.CommonName).
		Str("reason", reason).Dur("duration", time.Since(started)).Msg("session ended")
	return nil
}

// peerLeaf is the Session peer's verified leaf (auth.PeerLeaf's rule: a
// certificate no trusted chain vouches for does not count).
func peerLeaf(ctx context.Context) (*x509.Certificate, error) {
	if _, ok := peer.FromContext(ctx); !ok {
		return nil, errors.New("no peer")
	}
	leaf := auth.PeerLeafFromContext(ctx)
	if leaf == nil {
		return nil, errors.New("no verified TLS peer certificate")
	}
	return leaf, nil
}

func (s *session) recvLoop() error {
	for {
		cmd, err := s.stream.Recv()
		if err != nil {
			return err
		}
		s.dispatch(cmd)
	}
}

// send serialises writes on the stream; a failed send means the transport
// is gone, which ends the Session (and kills its commands).
func (s *session) send(r *clawkerdv1.Response) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	if err := s.stream.Send(r); err != nil {
		s.log.Warn().Str("event", "session_send_failed").Str("command_id", r.GetCommandId()).Err(err).Msg("send failed")
		s.cancel()
	}
}

func (s *session) sendError(id string, code clawkerdv1.ErrorCode, msg string) {
	s.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Error{Error: &clawkerdv1.Error{Code: code, Message: msg}}})
}

func (s *session) sendDone(id string, code int32) {
	s.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Done{Done: &clawkerdv1.Done{FinalExitCode: code}}})
}

// requestExit asks the server to exit after the caller's reply, which was
// already handed to the stream; ending the Session flushes it.
func (s *session) requestExit(code int) {
	s.log.Warn().Str("event", "exit_on_non_zero").Int("exit_code", code).Msg("command requested clawkerd exit")
	s.srv.requestExit(code)
}

// claim reserves a live command_id; false if it is already live.
func (s *session) claim(id string, c *shellCmd) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.live[id]; dup {
		return false
	}
	s.live[id] = c
	return true
}

// shellTarget resolves the command a Stdin, CloseStdin or Signal names:
// the live shell command, or finished=true for one that ended recently.
// Such a frame raced the command's Done and is moot: it is dropped rather
// than answered with an Error the CP could take for the command's end.
func (s *session) shellTarget(id string) (c *shellCmd, finished bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.live[id]; c != nil {
		return c, false
	}
	_, finished = s.recent[id]
	return nil, finished
}

// releaseShell frees c's id. A shell command calls it just before its
// terminal reply, so a CP that reuses the id as soon as it reads the Done
// finds it free (releasing after the reply raced that reuse: "duplicate
// live command_id"). Idempotent; never frees an id a newer command holds.
func (s *session) releaseShell(c *shellCmd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live[c.id] == c {
		s.rememberLocked(c.id)
		delete(s.live, c.id)
	}
}

// goCmd runs f for a claimed id on a tracked goroutine and releases the id
// afterwards, unless c (the shell command claimed under id, nil for other
// commands) released it already. A panic becomes an IO_ERROR reply, never
// a crash.
func (s *session) goCmd(id string, c *shellCmd, f func()) {
	s.mu.Lock()
	if s.closing {
		delete(s.live, id)
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			if c != nil {
				s.releaseShell(c)
				return
			}
			s.mu.Lock()
			delete(s.live, id)
			s.mu.Unlock()
		}()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error().Str("event", "panic_recovered").Str("command_id", id).Interface("panic", r).Msg("command handler panicked")
				if c != nil {
					s.releaseShell(c)
				}
				s.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, "internal error")
			}
		}()
		f()
	}()
}

// rememberLocked records a finished shell command id (s.mu held).
func (s *session) rememberLocked(id string) {
	if s.recentRing == nil {
		s.recentRing = make([]string, recentMax)
	}
	if old := s.recentRing[s.recentNext]; old != "" {
		delete(s.recent, old)
	}
	s.recentRing[s.recentNext] = id
	s.recentNext = (s.recentNext + 1) % recentMax
	s.recent[id] = struct{}{}
}

// creditTarget resolves an OutputCredit's command: the live shell
// command, or ok=true with nil when the id is live but not a shell command
// or finished recently (the credit is moot), or ok=false when unknown.
func (s *session) creditTarget(id string) (c *shellCmd, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, live := s.live[id]; live {
		return c, true
	}
	_, recent := s.recent[id]
	return nil, recent
}
