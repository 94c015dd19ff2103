package clawkerd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

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
			// What the CP may use beyond the base contract.
			Capabilities:  slices.Clone(clawkerdv1.Announced),
			Workdir:       s.srv.cfg.Workdir,
			CompletedOnce: s.srv.once.list(),
		}}})
	case *clawkerdv1.Command_Shell:
		if id == "" {
			invalid("empty command_id")
			return
		}
		if err := errors.Join(validateShell(p.Shell), validOnceKey(p.Shell.GetOnceKey())); err != nil {
			invalid(err.Error())
			return
		}
		c := newShellCmd(s, id, p.Shell)
		if !s.claim(id, c) {
			invalid("duplicate live command_id")
			return
		}
		if key := p.Shell.GetOnceKey(); key != "" {
			s.goCmd(id, c, func() { s.runOnce(c, key) })
			return
		}
		s.goCmd(id, c, func() { c.run(s.ctx) })
	case *clawkerdv1.Command_Stdin:
		if c, finished := s.shellTarget(id); c != nil {
			c.enqueueStdin(stdinMsg{data: p.Stdin.GetData()})
		} else if !finished {
			unknown()
		}
	case *clawkerdv1.Command_CloseStdin:
		if c, finished := s.shellTarget(id); c != nil {
			c.enqueueStdin(stdinMsg{close: true})
		} else if !finished {
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
	case *clawkerdv1.Command_Resize:
		if c, finished := s.shellTarget(id); c != nil {
			c.resize(p.Resize)
		} else if !finished {
			unknown()
		}
	case *clawkerdv1.Command_Signal:
		c, finished := s.shellTarget(id)
		if c == nil {
			if !finished {
				unknown()
			}
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
	case *clawkerdv1.Command_CredEnable:
		// No reply: an old-style reply would look like a command's end.
		s.srv.creds.enable(s, p.CredEnable.GetKinds())
	case *clawkerdv1.Command_CredReply:
		if !s.srv.creds.reply(s, id, p.CredReply) {
			s.log.Debug().Str("event", "cred_reply_stray").Str("command_id", id).Msg("no credential request waits for this reply")
		}
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
	s.goCmd(id, nil, f)
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
