// Package oldclawkerd is a test double of a clawkerd that speaks only the
// base Session contract (ARCHITECTURE.md), as a clawkerd built before any
// additive change, or another implementation of the contract, would:
//
//   - its HelloAck carries only initialized and cmd_running: no user, no
//     staged inputs, no capabilities;
//   - a payload outside the base contract (OutputCredit, anything later)
//     is answered with Error{INVALID_REQUEST} on that command id, and
//     ShellCommand fields it does not know (output_window) are ignored;
//   - a ShellCommand finishes (Done) only after its CloseStdin, even when
//     every stage has exited, as implementations whose pipelines are
//     stdin-driven do.
//
// Commands really run, on the host, with the test's privileges: uid and
// gid are ignored, and exit_on_non_zero does not end anything.
package oldclawkerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// outputChunk is the OutputChunk size; the base contract sets none.
const outputChunk = 32 << 10

// Server is the base-contract ClawkerdService. Set the exported fields
// before serving; read the records through the methods.
type Server struct {
	clawkerdv1.UnimplementedClawkerdServiceServer

	// Initialized and CmdRunning are HelloAck's base fields.
	Initialized, CmdRunning bool
	// RegisterOK is RegisterDone.ok for RegisterRequired.
	RegisterOK bool
	// Swallow, when set and true for a command, makes the server accept
	// it and then never answer it (a wedged peer): no Started, no Done.
	Swallow func(*clawkerdv1.ShellCommand) bool

	mu       sync.Mutex
	rejected []string // payload types answered with INVALID_REQUEST
	shells   []*clawkerdv1.ShellCommand
	closed   map[string]bool // ids that got CloseStdin
	signals  map[string][]int32
}

// Rejected lists the payload types answered with INVALID_REQUEST as
// unknown, in arrival order (e.g. "*clawkerdv1.Command_OutputCredit").
func (s *Server) Rejected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rejected...)
}

// Shells returns every ShellCommand received, in order.
func (s *Server) Shells() []*clawkerdv1.ShellCommand {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*clawkerdv1.ShellCommand(nil), s.shells...)
}

// ClosedStdin reports whether id got a CloseStdin.
func (s *Server) ClosedStdin(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed[id]
}

// Signals returns the signal numbers received, by command id.
func (s *Server) Signals() map[string][]int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]int32, len(s.signals))
	for id, sigs := range s.signals {
		out[id] = append([]int32(nil), sigs...)
	}
	return out
}

// session is one Session stream.
type session struct {
	srv    *Server
	stream clawkerdv1.ClawkerdService_SessionServer
	sendMu sync.Mutex
	mu     sync.Mutex
	live   map[string]*command
	wg     sync.WaitGroup
}

// Session serves one stream until the CP ends it.
func (s *Server) Session(stream clawkerdv1.ClawkerdService_SessionServer) error {
	ss := &session{srv: s, stream: stream, live: map[string]*command{}}
	ctx, cancel := context.WithCancel(stream.Context())
	defer func() {
		cancel()
		ss.wg.Wait()
	}()
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return nil
		}
		ss.dispatch(ctx, cmd)
	}
}

func (ss *session) send(r *clawkerdv1.Response) {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	_ = ss.stream.Send(r)
}

func (ss *session) sendError(id string, code clawkerdv1.ErrorCode, msg string) {
	ss.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Error{
		Error: &clawkerdv1.Error{Code: code, Message: msg}}})
}

func (ss *session) done(id string, code int32) {
	ss.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Done{
		Done: &clawkerdv1.Done{FinalExitCode: code}}})
}

func (ss *session) lookup(id string) *command {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.live[id]
}

func (ss *session) dispatch(ctx context.Context, cmd *clawkerdv1.Command) {
	id := cmd.GetCommandId()
	srv := ss.srv
	switch p := cmd.GetPayload().(type) {
	case *clawkerdv1.Command_Hello:
		srv.mu.Lock()
		ack := &clawkerdv1.HelloAck{Initialized: srv.Initialized, CmdRunning: srv.CmdRunning}
		srv.mu.Unlock()
		ss.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_HelloAck{HelloAck: ack}})
	case *clawkerdv1.Command_RegisterRequired:
		ss.send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_RegisterDone{
			RegisterDone: &clawkerdv1.RegisterDone{Ok: srv.RegisterOK}}})
	case *clawkerdv1.Command_AgentInitialized:
		srv.mu.Lock()
		srv.Initialized = true
		srv.mu.Unlock()
		ss.done(id, 0)
	case *clawkerdv1.Command_AgentReady:
		srv.mu.Lock()
		srv.CmdRunning = true
		srv.mu.Unlock()
		ss.done(id, 0)
	case *clawkerdv1.Command_Shell:
		ss.shell(ctx, id, p.Shell)
	case *clawkerdv1.Command_Stdin:
		if c := ss.lookup(id); c != nil {
			c.stdin(p.Stdin.GetData(), false)
		} else {
			ss.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID, "unknown command_id")
		}
	case *clawkerdv1.Command_CloseStdin:
		srv.mu.Lock()
		if srv.closed == nil {
			srv.closed = map[string]bool{}
		}
		srv.closed[id] = true
		srv.mu.Unlock()
		if c := ss.lookup(id); c != nil {
			c.stdin(nil, true)
		} else {
			ss.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID, "unknown command_id")
		}
	case *clawkerdv1.Command_Signal:
		srv.mu.Lock()
		if srv.signals == nil {
			srv.signals = map[string][]int32{}
		}
		srv.signals[id] = append(srv.signals[id], p.Signal.GetSigno())
		srv.mu.Unlock()
		if c := ss.lookup(id); c != nil {
			c.signal(syscall.Signal(p.Signal.GetSigno()))
		} else {
			ss.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND_ID, "unknown command_id")
		}
	default:
		// Everything newer than the base contract, and an empty payload.
		srv.mu.Lock()
		srv.rejected = append(srv.rejected, fmt.Sprintf("%T", cmd.GetPayload()))
		srv.mu.Unlock()
		ss.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST, "unknown or empty payload")
	}
}

func (ss *session) shell(ctx context.Context, id string, spec *clawkerdv1.ShellCommand) {
	ss.srv.mu.Lock()
	ss.srv.shells = append(ss.srv.shells, spec)
	ss.srv.mu.Unlock()
	if id == "" || len(spec.GetStages()) == 0 {
		ss.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST, "empty command_id or no stages")
		return
	}
	for _, st := range spec.GetStages() {
		if len(st.GetArgv()) == 0 || st.GetArgv()[0] == "" {
			ss.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST, "empty argv")
			return
		}
	}
	c := &command{id: id, spec: spec, ss: ss, stdinClosed: make(chan struct{})}
	ss.mu.Lock()
	if ss.live[id] != nil {
		ss.mu.Unlock()
		ss.sendError(id, clawkerdv1.ErrorCode_ERROR_CODE_INVALID_REQUEST, "duplicate live command_id")
		return
	}
	ss.live[id] = c
	ss.mu.Unlock()
	if f := ss.srv.Swallow; f != nil && f(spec) {
		return // stays live, never answered
	}
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		c.run(ctx)
	}()
}

// command is one running ShellCommand.
type command struct {
	id   string
	spec *clawkerdv1.ShellCommand
	ss   *session

	mu          sync.Mutex
	procs       []*os.Process
	stdinW      *os.File
	pendingIn   [][]byte // frames that arrived before the spawn
	closeOnce   sync.Once
	stdinClosed chan struct{}
}

func (c *command) stdin(data []byte, closeIt bool) {
	c.mu.Lock()
	w := c.stdinW
	if w == nil {
		if len(data) > 0 {
			c.pendingIn = append(c.pendingIn, data)
		}
	}
	c.mu.Unlock()
	if w != nil && len(data) > 0 {
		// A test double may block its recv loop on a slow reader.
		_, _ = w.Write(data)
	}
	if closeIt {
		c.closeOnce.Do(func() {
			close(c.stdinClosed)
			c.mu.Lock()
			if c.stdinW != nil {
				_ = c.stdinW.Close()
			}
			c.mu.Unlock()
		})
	}
}

func (c *command) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		_ = syscall.Kill(-p.Pid, sig)
	}
}

func (c *command) run(ctx context.Context) {
	ss := c.ss
	defer func() {
		ss.mu.Lock()
		delete(ss.live, c.id)
		ss.mu.Unlock()
	}()
	cmds, outR, err := c.spawn()
	if err != nil {
		ss.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED, err.Error())
		return
	}
	ss.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_Started{Started: &clawkerdv1.Started{}}})
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		buf := make([]byte, outputChunk)
		for {
			n, rerr := outR.Read(buf)
			if n > 0 {
				ss.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_Output{
					Output: &clawkerdv1.OutputChunk{Data: append([]byte(nil), buf[:n]...)}}})
			}
			if rerr != nil {
				return
			}
		}
	}()
	var timeout <-chan time.Time
	if s := c.spec.GetTimeoutSeconds(); s > 0 {
		t := time.NewTimer(time.Duration(s) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	waited := make(chan struct{})
	codes := make([]int32, len(cmds))
	go func() {
		defer close(waited)
		for i, cmd := range cmds {
			codes[i] = exitCode(cmd.Wait())
			se := &clawkerdv1.StageExit{StageIndex: uint32(i), ExitCode: codes[i]}
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				se.ExitCode, se.Signo = -1, int32(ws.Signal())
			}
			ss.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_StageExit{StageExit: se}})
		}
	}()
	timedOut := false
	select {
	case <-waited:
	case <-timeout:
		timedOut = true
	case <-ctx.Done():
	}
	if timedOut || ctx.Err() != nil {
		c.signal(syscall.SIGKILL)
		<-waited
	}
	<-outDone
	_ = outR.Close()
	if timedOut {
		ss.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_TIMEOUT, "timed out")
		return
	}
	// The base contract's stdin-driven finish: no Done before CloseStdin.
	select {
	case <-c.stdinClosed:
	case <-ctx.Done():
		return
	}
	ss.done(c.id, codes[len(codes)-1])
}

// spawn starts the pipeline: stage i's stdout feeds stage i+1, every
// stage's stderr and the last stdout share the output pipe.
func (c *command) spawn() ([]*exec.Cmd, *os.File, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = inR.Close()
		_ = inW.Close()
		return nil, nil, err
	}
	childEnds := []*os.File{inR, outW}
	defer func() {
		for _, f := range childEnds {
			_ = f.Close()
		}
	}()
	var cmds []*exec.Cmd
	prev := inR
	for i, st := range c.spec.GetStages() {
		cmd := exec.Command(st.GetArgv()[0], st.GetArgv()[1:]...)
		cmd.Dir = st.GetCwd()
		cmd.Env = os.Environ()
		for k, v := range st.GetEnv() {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stdin, cmd.Stderr, cmd.Stdout = prev, outW, outW
		var next *os.File
		if i < len(c.spec.GetStages())-1 {
			r, w, perr := os.Pipe()
			if perr != nil {
				err = perr
			}
			childEnds = append(childEnds, r, w)
			cmd.Stdout, next = w, r
		}
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			c.signal(syscall.SIGKILL)
			for _, started := range cmds {
				_ = started.Wait()
			}
			_ = inW.Close()
			_ = outR.Close()
			return nil, nil, fmt.Errorf("stage %d: %w", i, err)
		}
		c.mu.Lock()
		c.procs = append(c.procs, cmd.Process)
		c.mu.Unlock()
		cmds = append(cmds, cmd)
		prev = next
	}
	if b := c.spec.GetInitialStdin(); len(b) > 0 {
		go func() { _, _ = inW.Write(b) }()
	}
	c.mu.Lock()
	c.stdinW = inW
	pending := c.pendingIn
	c.pendingIn = nil
	c.mu.Unlock()
	for _, b := range pending {
		_, _ = inW.Write(b)
	}
	select {
	case <-c.stdinClosed:
		_ = inW.Close() // CloseStdin raced the spawn
	default:
	}
	return cmds, outR, nil
}

func exitCode(err error) int32 {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int32(ws.Signal())
		}
		return int32(ee.ExitCode())
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return -1
	}
	return 0
}
