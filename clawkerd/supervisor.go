package clawkerd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"

	"github.com/clawker/clawker/internal/logger"
)

// ExecUser is a resolved CLAWKER_USER.
type ExecUser = user.ExecUser

// ResolveUser resolves a CLAWKER_USER spec (name, uid, name:group or
// uid:gid) against the given passwd and group files. An unknown name is an
// error; a bare numeric uid absent from passwd is accepted (as Docker does).
func ResolveUser(spec, passwdPath, groupPath string) (*ExecUser, error) {
	defaults := &user.ExecUser{Uid: 0, Gid: 0, Home: "/"}
	u, err := user.GetExecUserPath(spec, defaults, passwdPath, groupPath)
	if err != nil {
		return nil, fmt.Errorf("resolve user %q: %w", spec, err)
	}
	return u, nil
}

// supervisor owns the user CMD: spawned at most once (AgentReady), as the
// configured user, in its own process group; signals are forwarded to
// that group; its exit ends clawkerd.
type supervisor struct {
	procs   *procTable
	user    *ExecUser
	userCmd []string
	console io.Writer
	log     *logger.Logger

	mu      sync.Mutex
	spawned bool // AgentReady succeeded once (with or without a child)
	alive   bool
	pid     int
	code    int
	status  exitStatus
	exited  chan struct{} // closed when the child has exited

	tty   bool          // run the user CMD on a terminal (userterm.go)
	term  *userTerm     // its terminal, once spawned
	ready chan struct{} // closed once start succeeded (with or without a child)
}

func newSupervisor(procs *procTable, u *ExecUser, userCmd []string, console io.Writer, log *logger.Logger) *supervisor {
	return &supervisor{procs: procs, user: u, userCmd: userCmd, console: console, log: log, exited: make(chan struct{}),
		ready: make(chan struct{})}
}

// start spawns the user CMD exactly once. Later calls succeed without a
// second process. With no CMD and no defaultCmd clawkerd only supervises.
//
// On success started runs before start returns and before the child's
// exit can be observed (the exit watcher needs s.mu, held until then), so
// the AgentReady reply reaches the stream before a CMD that exits at once
// makes Serve end the Sessions.
func (s *supervisor) start(defaultCmd string, started func()) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if err == nil {
			started()
		}
	}()
	if s.spawned {
		s.log.Info().Str("event", "agent_ready_repeat").Msg("user CMD already spawned")
		return nil
	}
	argv := s.userCmd
	if len(argv) == 0 && defaultCmd != "" {
		argv = []string{"/bin/sh", "-c", defaultCmd}
	}
	if len(argv) == 0 {
		s.spawned = true
		close(s.ready)
		s.log.Info().Str("event", "user_cmd_none").Msg("no user CMD: supervising only")
		return nil
	}
	path, err := lookPath(argv[0], os.Getenv("PATH"))
	if err != nil {
		return err
	}
	env := os.Environ()
	attr := &syscall.SysProcAttr{Setpgid: true}
	if s.user != nil {
		groups := make([]uint32, 0, len(s.user.Sgids))
		for _, g := range s.user.Sgids {
			groups = append(groups, uint32(g))
		}
		if s.user.Uid != 0 || s.user.Gid != 0 || len(groups) > 0 {
			attr.Credential = &syscall.Credential{Uid: uint32(s.user.Uid), Gid: uint32(s.user.Gid), Groups: groups}
		}
		if s.user.Home != "" {
			env = overlayEnv(env, map[string]string{"HOME": s.user.Home})
		}
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, SysProcAttr: attr, Stdin: os.Stdin}
	var term *userTerm
	if s.tty {
		if envValue(cmd.Env, "TERM") == "" {
			cmd.Env = overlayEnv(cmd.Env, map[string]string{"TERM": "xterm"}) // as docker run -t
		}
		t, slave, terr := openUserTerm(cmd, s.log)
		if terr != nil {
			return terr
		}
		defer func() { _ = slave.Close() }()
		defer func() {
			if err != nil {
				t.close()
			}
		}()
		term = t
	} else if f, ok := s.console.(*os.File); ok {
		cmd.Stdout, cmd.Stderr = f, f
		if f == os.Stdout {
			cmd.Stderr = os.Stderr // the container's own stderr
		}
	} else {
		// Non-file console (tests): a pipe we drain ourselves, since
		// exec.Cmd's copy goroutines need Wait, which the reaper forbids.
		r, w, perr := os.Pipe()
		if perr != nil {
			return fmt.Errorf("console pipe: %w", perr)
		}
		cmd.Stdout, cmd.Stderr = w, w
		defer func() { _ = w.Close() }()
		go func() {
			defer recoverLog(s.log, "user_cmd_console")
			_, _ = io.Copy(s.console, r)
			_ = r.Close()
		}()
	}
	pid, ch, err := s.procs.start(cmd)
	if err != nil {
		return fmt.Errorf("spawn user CMD: %w", err)
	}
	s.spawned, s.alive, s.pid = true, true, pid
	if term != nil {
		s.term = term
		go term.pump(s.console)
	}
	close(s.ready)
	uid, gid := 0, 0
	if s.user != nil {
		uid, gid = s.user.Uid, s.user.Gid
	}
	s.log.Info().Str("event", "user_cmd_started").Strs("argv", argv).Int("pid", pid).Int("uid", uid).Int("gid", gid).Msg("user CMD started")
	go func() {
		defer recoverLog(s.log, "user_cmd_wait")
		st := <-ch
		s.mu.Lock()
		s.alive = false
		s.code = st.code()
		s.status = st
		s.mu.Unlock()
		s.log.Info().Str("event", "user_cmd_exited").Int("pid", pid).Int("exit_code", st.code()).Msg("user CMD exited")
		close(s.exited)
	}()
	return nil
}

func (s *supervisor) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alive
}

func (s *supervisor) exitCode() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code
}

// forward sends sig to the user CMD's process group.
func (s *supervisor) forward(sig syscall.Signal) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.alive {
		return false
	}
	if err := unix.Kill(-s.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		s.log.Warn().Str("event", "signal_forward_failed").Int("pid", s.pid).Err(err).Msg("forward failed")
	}
	return true
}

// kill SIGKILLs the user CMD's group (used when clawkerd itself exits
// without being PID 1, so nothing is left behind).
func (s *supervisor) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.alive {
		_ = unix.Kill(-s.pid, syscall.SIGKILL)
	}
}
