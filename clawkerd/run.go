package clawkerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/clawker/clawker/internal/logger"
)

// forwardedSignals go to the user CMD's process group. SIGCHLD (reaper)
// and SIGURG (Go's preemption) are deliberately absent.
var forwardedSignals = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

// terminating reports whether sig ends clawkerd when no user CMD runs.
func terminating(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// Main is cmd/clawkerd: it parses argv/env, serves until the user CMD
// exits (or a signal or exit_on_non_zero ends it) and returns the process
// exit code: the user CMD's (128+n if killed by signal n), 2 on
// configuration errors.
func Main(args []string, stderr io.Writer) int {
	opts, err := ParseOptions(args, os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log, closeLog := openAuditLog(opts.LogPath, opts.LogLevel, stderr)
	defer closeLog()
	if len(opts.Credentials) > 0 {
		// Before anything is spawned: the user CMD and every exec inherit it.
		self, err := os.Executable()
		if err != nil {
			self = "/run/clawker/bin/clawkerd"
		}
		for k, v := range credEnv(opts.CredSocketDir, self, opts.Credentials, os.Getenv) {
			_ = os.Setenv(k, v)
		}
	}
	// Listen first: from here the kernel completes the CP's connects into
	// the backlog while the rest of startup runs, and Serve answers them.
	lis, err := net.Listen("tcp", opts.ListenAddr)
	if err != nil {
		log.Error().Str("event", "listen_failed").Str("addr", opts.ListenAddr).Err(err).Msg("listen failed")
		return 1
	}
	defer func() { _ = lis.Close() }()
	// Before any user process exists (the user CMD waits for init).
	trustEgressCA(log, "/", opts.BootstrapDir)
	if opts.ReapAll && os.Getpid() != 1 {
		// Not PID 1 but asked to reap: become the subreaper so orphans of
		// our children come to us rather than to the real init.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			log.Warn().Str("event", "subreaper_failed").Err(err).Msg("PR_SET_CHILD_SUBREAPER failed")
		}
	}

	// Signals are caught before anything is spawned so none is lost.
	sigc := make(chan os.Signal, 32)
	signal.Notify(sigc, forwardedSignals...)
	defer signal.Stop(sigc)

	srv, err := NewServer(opts.Config, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if !srv.initialized() {
		// A fresh container registers first thing: get the TLS handshakes
		// with the CP out of the way while it dials us. Concurrently, so
		// Serve is not delayed.
		go func() {
			defer recoverLog(log, "register_prewarm")
			srv.reg.prewarm(srv.ctx)
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigExit := make(chan int, 1)
	go func() {
		defer recoverLog(log, "signal_loop")
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-sigc:
				sig := s.(syscall.Signal)
				if srv.ForwardSignal(sig) {
					log.Info().Str("event", "signal_forwarded").Str("signal", sig.String()).Msg("signal forwarded to user CMD")
					continue
				}
				if terminating(sig) {
					log.Info().Str("event", "signal_exit").Str("signal", sig.String()).Msg("no user CMD running: exiting")
					select {
					case sigExit <- 128 + int(sig):
					default:
					}
					cancel()
					return
				}
			}
		}
	}()

	err = srv.Serve(ctx, lis)
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		log.Info().Str("event", "clawkerd_exit").Int("exit_code", ee.Code).Str("reason", ee.Reason).Msg("exiting")
		return ee.Code
	case err != nil:
		log.Error().Str("event", "serve_failed").Err(err).Msg("serve failed")
		return 1
	}
	select {
	case code := <-sigExit:
		return code
	default:
		return 0
	}
}

// openAuditLog returns a logger writing JSON to stderr and, when path is
// set, to a size-rotated file. The file is created in the background: on
// a fresh container that is a directory copy-up on overlayfs, milliseconds
// that would otherwise delay the listener. Lines logged before it is open
// wait for it, so none is lost. A file that cannot be opened degrades to
// stderr only.
func openAuditLog(path, level string, stderr io.Writer) (*logger.Logger, func()) {
	if path == "" {
		return logger.New(stderr, level, "clawkerd"), func() {}
	}
	lj := &lumberjack.Logger{Filename: path, MaxSize: 10, MaxBackups: 3, Compress: false}
	f := &asyncFile{ready: make(chan struct{})}
	go func() {
		defer close(f.ready)
		err := os.MkdirAll(filepath.Dir(path), 0o750)
		if err == nil {
			// An empty write makes lumberjack open (or create) the file now.
			_, err = lj.Write(nil)
		}
		if err != nil {
			// Straight to stderr: f is not ready, so l would wait on it.
			logger.New(stderr, level, "clawkerd").Warn().Str("event", "audit_log_unavailable").Err(err).Msg("log file disabled")
			return
		}
		f.w = lj
	}()
	l := logger.New(io.MultiWriter(stderr, f), level, "clawkerd")
	return l, func() {
		<-f.ready
		if f.w != nil {
			_ = lj.Close()
		}
	}
}

// asyncFile is a writer that becomes usable once ready is closed: w set,
// or w nil and writes are dropped (stderr still has them).
type asyncFile struct {
	ready chan struct{}
	w     io.Writer
}

func (f *asyncFile) Write(p []byte) (int, error) {
	<-f.ready
	if f.w == nil {
		return len(p), nil
	}
	return f.w.Write(p)
}
