package clawkerd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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
	cancel()
	sess.log.Info().Str("event", "session_ended").Str("peer_cn", leaf.Subject.CommonName).
		Str("reason", reason).Dur("duration", time.Since(started)).Msg("session ended")
	return nil
}

func peerLeaf(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, errors.New("no TLS peer certificate")
	}
	return ti.State.PeerCertificates[0], nil
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

func (s *session) lookupShell(id string) *shellCmd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[id]
}

// goCmd runs f for a claimed id on a tracked goroutine and releases the id
// afterwards. A panic becomes an IO_ERROR reply, never a crash.
func (s *session) goCmd(id string, f func()) {
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
			s.mu.Lock()
			if s.live[id] != nil {
				s.rememberLocked(id)
			}
			delete(s.live, id)
			s.mu.Unlock()
		}()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error().Str("event", "panic_recovered").Str("command_id", id).Interface("panic", r).Msg("command handler panicked")
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

// dispatch routes one Command. It never blocks on a command's work: it runs
// on the Session's only recv loop, which every command, Signal and Hello
// share. Replies it sends wait only for the stream (gRPC flow control).
func (s *session) dispatch(cmd *clawkerdv1.Command) {
	defer recoverLog(s.log, "dispatch")
	id := cmd.GetCommandId()
	invalid := func(msg string) { s.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST, msg) }
	unknown := func() {
		s.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID, "unknown command_id")
	}
	switch p := cmd.GetPayload().(type) {
	case *clawkerdv1.Command_Hello:
		s.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_HelloAck{HelloAck: &clawkerdv1.HelloAck{
			Initialized: s.srv.initialized(),
			CmdRunning:  s.srv.sup.running(),
			User:        resolvedUser(&s.srv.cfg),
			NoShell:     executable(s.srv.cfg.ShellPath) != nil,
			Staged:      listStaged(s.srv.cfg.StagingDir),
		}}})
	case *clawkerdv1.Command_Shell:
		if id == "" {
			invalid("empty command_id")
			return
		}
		if err := validateShell(p.Shell); err != nil {
			invalid(err.Error())
			return
		}
		c := newShellCmd(s, id, p.Shell)
		if !s.claim(id, c) {
			invalid("duplicate live command_id")
			return
		}
		s.goCmd(id, func() { c.run(s.ctx) })
	case *clawkerdv1.Command_Stdin:
		if c := s.lookupShell(id); c != nil {
			c.enqueueStdin(stdinMsg{data: p.Stdin.GetData()})
		} else {
			unknown()
		}
	case *clawkerdv1.Command_CloseStdin:
		if c := s.lookupShell(id); c != nil {
			c.enqueueStdin(stdinMsg{close: true})
		} else {
			unknown()
		}
	case *clawkerdv1.Command_OutputCredit:
		c, ok := s.creditTarget(id)
		switch {
		case !ok:
			unknown()
		case c != nil:
			c.addCredit(p.OutputCredit.GetBytes())
		}
	case *clawkerdv1.Command_Signal:
		c := s.lookupShell(id)
		if c == nil {
			unknown()
			return
		}
		signo := p.Signal.GetSigno()
		if signo <= 0 || signo > 64 {
			invalid(fmt.Sprintf("invalid signal %d", signo))
			return
		}
		c.signal(syscall.Signal(signo))
	case *clawkerdv1.Command_RegisterRequired:
		s.claimAndGo(id, func() {
			done := &clawkerdv1.RegisterDone{Ok: true}
			if err := s.srv.reg.register(s.ctx); err != nil {
				// The reason goes to the CP, which logs it: it is the CP's
				// own refusal or a connectivity problem, nothing secret.
				done = &clawkerdv1.RegisterDone{Ok: false, Error: err.Error()}
				s.log.Warn().Str("event", "register_failed").Err(err).Msg("register failed")
			}
			s.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_RegisterDone{RegisterDone: done}})
		})
	case *clawkerdv1.Command_AgentReady:
		s.claimAndGo(id, func() {
			if err := s.srv.sup.start(p.AgentReady.GetDefaultCmd(), func() { s.sendDone(id, 0) }); err != nil {
				s.log.Error().Str("event", "user_cmd_spawn_failed").Err(err).Msg("user CMD spawn failed")
				s.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED, err.Error())
			}
		})
	case *clawkerdv1.Command_AgentInitialized:
		s.claimAndGo(id, func() {
			f, err := writeMarker(s.srv.cfg.InitMarkerPath)
			if err != nil {
				s.log.Error().Str("event", "init_marker_failed").Err(err).Msg("write init marker failed")
				s.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, "write init marker failed")
				return
			}
			s.sendDone(id, 0)
			// Flushed after the reply, off the init plan's path: the
			// written marker already survives stop/start (the page cache
			// outlives the container); the fsync guards against a host
			// crash, after which the idempotent one-time steps would
			// merely run again.
			if err := f.Sync(); err != nil {
				s.log.Warn().Str("event", "init_marker_sync_failed").Err(err).Msg("init marker not flushed")
			}
			_ = f.Close()
		})
	default:
		invalid("unknown or empty payload")
	}
}

// resolvedUser is the identity HelloAck reports: the user CMD's own, so
// the CP's init steps need no probe of their own and cannot disagree.
func resolvedUser(c *Config) *clawkerdv1.ResolvedUser {
	if u := c.User; u != nil {
		return &clawkerdv1.ResolvedUser{Uid: uint32(u.Uid), Gid: uint32(u.Gid), Home: u.Home}
	}
	home := c.RootHome
	if home == "" {
		home = "/root"
	}
	return &clawkerdv1.ResolvedUser{Home: home}
}

// stagedMax bounds the staging listing; a larger tree is not listed and
// the CP then runs every step.
const stagedMax = 256

// listStaged lists dir to depth two (see HelloAck.staged). nil when it
// cannot be listed faithfully: the CP must then assume everything exists.
func listStaged(dir string) *clawkerdv1.StagedInputs {
	top, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return &clawkerdv1.StagedInputs{}
	}
	if err != nil {
		return nil
	}
	out := &clawkerdv1.StagedInputs{}
	for _, e := range top {
		out.Paths = append(out.Paths, e.Name())
		if e.Type()&fs.ModeSymlink != 0 {
			return nil // might lead to a directory we do not list
		}
		if e.IsDir() {
			sub, err := os.ReadDir(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil
			}
			for _, se := range sub {
				out.Paths = append(out.Paths, e.Name()+"/"+se.Name())
			}
		}
		if len(out.Paths) > stagedMax {
			return nil
		}
	}
	return out
}

// claimAndGo runs a non-shell command under the duplicate-id rule.
func (s *session) claimAndGo(id string, f func()) {
	// An empty id is not correlatable, so it is not claimed; "" is never a
	// key of live (ShellCommand requires an id), so release is a no-op.
	if id != "" && !s.claim(id, nil) {
		s.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST, "duplicate live command_id")
		return
	}
	s.goCmd(id, f)
}

// writeMarker creates the init marker and returns it open for the
// caller to flush and close.
func writeMarker(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("marker dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("marker: %w", err)
	}
	if _, err := f.WriteString(time.Now().UTC().Format(time.RFC3339) + "\n"); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("marker write: %w", err)
	}
	return f, nil
}
