package clawkerd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/rpcbuf"
)

// sessionWriteBuffer is how much the Session transport gathers before a
// write: bulk exec output goes out in few large syscalls.
const sessionWriteBuffer = 256 << 10

// shutdownGrace bounds a graceful stop before connections are cut.
const shutdownGrace = 5 * time.Second

// ExitError is returned by Serve when clawkerd must exit with Code: the
// user CMD exited, or a command with exit_on_non_zero failed.
type ExitError struct {
	Code   int
	Reason string
}

func (e *ExitError) Error() string { return fmt.Sprintf("clawkerd exit %d: %s", e.Code, e.Reason) }

// Server is the clawkerd Session server plus the process-wide state it
// acts on (user CMD supervisor, init marker, Register client). It does not
// need to be PID 1 and reads nothing from disk except the assertion (when
// Config.Assertion is empty) and the init marker, so tests can run it
// in-process over loopback TLS.
type Server struct {
	clawkerdv1.UnimplementedClawkerdServiceServer

	cfg   Config
	log   *logger.Logger
	procs *procTable
	sup   *supervisor
	reg   *registrar
	once  *onceSteps // completed one-time init steps
	creds *credRelay // cred-forward/v1 (credrelay.go)
	grpc  *grpc.Server

	ctx    context.Context // server-wide; cancelled on exit or Serve end
	cancel context.CancelFunc

	sessions atomic.Int64
	attaches attachSet // live attaches to the user CMD (shell_attach.go)
	// stdinHigh is the largest stdin backlog (queued frame cost) any
	// command held; see StdinBacklogHigh.
	stdinHigh atomic.Int64

	exitOnce sync.Once
	exitCh   chan *ExitError
	served   atomic.Bool
}

// NewServer validates cfg and builds a Server. Cert and CAPool are required.
func NewServer(cfg Config, log *logger.Logger) (*Server, error) {
	log = logger.OrNop(log)
	if len(cfg.Cert.Certificate) == 0 || cfg.Cert.PrivateKey == nil {
		return nil, errors.New("clawkerd: Config.Cert is required")
	}
	if cfg.CAPool == nil {
		return nil, errors.New("clawkerd: Config.CAPool is required")
	}
	c := cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    c,
		log:    log,
		procs:  newProcTable(c.ReapAll, log),
		ctx:    ctx,
		cancel: cancel,
		exitCh: make(chan *ExitError, 1),
	}
	s.sup = newSupervisor(s.procs, c.User, c.UserCmd, c.Console, log)
	s.sup.tty = c.TTY
	s.reg = newRegistrar(&s.cfg, log)
	s.once = newOnceSteps(s.cfg.InitMarkerPath)
	s.creds = newCredRelay(log)
	s.grpc = grpc.NewServer(
		// Exec output leaves in big flushes, one syscall each (see
		// rpcbuf.BatchWrites) instead of one per 16 KiB TLS record.
		grpc.Creds(rpcbuf.BatchWrites(credentials.NewTLS(ServerTLSConfig(c.Cert, c.CAPool)))),
		grpc.WriteBufferSize(sessionWriteBuffer),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: c.KeepaliveTime, Timeout: c.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		// Exec output is bulk data: encode it without gRPC's zeroed 1 MiB
		// buffer per message (see rpcbuf).
		grpc.ForceServerCodecV2(rpcbuf.NewCodec()),
		// Received frames (stdin) without gRPC's zeroing pool.
		experimental.BufferPool(rpcbuf.TransportPool()),
	)
	clawkerdv1.RegisterClawkerdServiceServer(s.grpc, s)
	return s, nil
}

// Serve serves Sessions on lis until ctx ends (returns nil), the user CMD
// exits or exit_on_non_zero fires (returns *ExitError), or the listener
// fails. Serve may be called once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("clawkerd: Serve called twice")
	}
	defer s.cancel()
	reapCtx, stopReap := context.WithCancel(context.Background())
	defer stopReap()
	go func() {
		defer recoverLog(s.log, "reaper")
		s.procs.reapLoop(reapCtx)
	}()
	if len(s.cfg.Credentials) > 0 {
		s.creds.serveCredSockets(s.ctx, s.cfg.CredSocketDir, s.cfg.Credentials)
	}
	serveErr := make(chan error, 1)
	go func() {
		defer recoverLog(s.log, "grpc_serve")
		serveErr <- s.grpc.Serve(lis)
	}()
	s.log.Info().Str("event", "listening").Str("addr", lis.Addr().String()).Bool("reap_all", s.cfg.ReapAll).Msg("session listener up")

	var result error
	select {
	case <-ctx.Done():
	case ee := <-s.exitCh:
		result = ee
	case <-s.sup.exited:
		code := s.sup.exitCode()
		result = &ExitError{Code: code, Reason: "user CMD exited"}
		// Attached clients get the code in their Done before the
		// Sessions end (ending them first would leave only an IO_ERROR).
		if n := s.attaches.awaitReplies(attachReplyGrace); n > 0 {
			s.log.Warn().Str("event", "attach_reply_timeout").Int("attaches", n).Dur("waited", attachReplyGrace).
				Msg("attached clients did not get the exit code in time")
		}
	case err := <-serveErr:
		s.cancel()
		s.sup.kill()
		return fmt.Errorf("clawkerd: serve: %w", err)
	}
	// Ending the server context ends every Session (their live commands
	// are killed); GracefulStop then flushes the final replies.
	s.cancel()
	s.stopGRPC()
	s.sup.kill()
	return result
}

func (s *Server) stopGRPC() {
	done := make(chan struct{})
	go func() {
		defer recoverLog(s.log, "graceful_stop")
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn().Str("event", "graceful_stop_timeout").Msg("forcing stop")
		s.grpc.Stop()
		<-done
	}
}

// requestExit makes Serve return *ExitError{code}; the first request wins.
func (s *Server) requestExit(code int) {
	s.exitOnce.Do(func() { s.exitCh <- &ExitError{Code: code, Reason: "exit_on_non_zero"} })
}

// ForwardSignal forwards sig to the user CMD's process group and reports
// whether there was a running user CMD to receive it.
func (s *Server) ForwardSignal(sig syscall.Signal) bool { return s.sup.forward(sig) }

// UserCmdRunning reports whether the user CMD is running.
func (s *Server) UserCmdRunning() bool { return s.sup.running() }

// ActiveSessions is the number of open Sessions (for tests and metrics).
func (s *Server) ActiveSessions() int { return int(s.sessions.Load()) }

func (s *Server) initialized() bool {
	_, err := os.Stat(s.cfg.InitMarkerPath)
	return err == nil
}
