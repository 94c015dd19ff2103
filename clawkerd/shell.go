package clawkerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// maxStages bounds a pipeline so a request cannot exhaust fds.
const maxStages = 64

// Exit codes used by exit_on_non_zero for terminal errors.
const (
	exitCodeTimeout     = 124
	exitCodeSpawnFailed = 127
)

// shellCmd is one live ShellCommand of a Session.
type shellCmd struct {
	id   string
	spec *clawkerdv1.ShellCommand
	sess *session

	stdinReady chan struct{} // cap 1: wakes the writer after an enqueue
	done       chan struct{} // closed when the command has fully ended

	// Output flow control (ShellCommand.output_window > 0): the reader
	// sends at most credit bytes, then waits on creditReady. abort (closed
	// once, on a SIGKILL, timeout or overflow) ends the wait and the
	// reading: the command is being killed and its output is moot.
	window      int64
	creditReady chan struct{} // cap 1: wakes the reader after a grant
	abort       chan struct{}
	abortOnce   sync.Once
	stagesEnded chan struct{} // closed by run once every stage exited

	mu         sync.Mutex
	pids       []int
	live       []bool
	stdinQ     []stdinMsg       // frames not yet written, in order
	stdinBytes int              // cost of the frames queued or being written
	stdinShut  bool             // CloseStdin seen, or the backlog overflowed
	overflow   bool             // killed because the stdin backlog overflowed
	spawned    bool             // every stage started
	pending    []syscall.Signal // Signals that arrived before spawn finished
	credit     int64            // output bytes the reader may still send
	ptyMaster  *os.File         // the terminal of a tty command (shell_tty.go)
	ptyClosed  bool             // run closed ptyMaster
	errR       *os.File         // stderr pipe with separate_stderr, set by spawn
	attached   bool             // attach_user_cmd: the "stage" is the user CMD (shell_attach.go)
	detached   chan struct{}    // closed by detach
	detachOnce sync.Once

	// record, set for a one-time step (once_key), makes its success
	// durable; it runs before the Done, so a recorded step is never rerun.
	record func() error

	// Stdin credit (ShellCommand.stdin_window > 0): the writer returns
	// the cost of the frames the pipe took, in batches of a quarter
	// window. creditMu orders a grant before the terminal reply: a credit
	// after it could land on a later command that reuses the id.
	stdinWindow  int64
	creditMu     sync.Mutex
	stdinPending int64 // written, not yet returned (creditMu)
	replied      bool  // terminal reply sent or being sent (creditMu)
}

func newShellCmd(sess *session, id string, spec *clawkerdv1.ShellCommand) *shellCmd {
	w := int64(spec.GetOutputWindow())
	return &shellCmd{id: id, spec: spec, sess: sess, stdinReady: make(chan struct{}, 1), done: make(chan struct{}),
		window: w, credit: w, creditReady: make(chan struct{}, 1), abort: make(chan struct{}),
		stagesEnded: make(chan struct{}), stdinWindow: int64(spec.GetStdinWindow()), detached: make(chan struct{})}
}

// validateShell checks a ShellCommand before anything is spawned.
func validateShell(spec *clawkerdv1.ShellCommand) error {
	if spec.GetAttachUserCmd() {
		return validateAttach(len(spec.GetStages()))
	}
	if len(spec.GetStages()) == 0 {
		return errors.New("no stages")
	}
	if len(spec.GetStages()) > maxStages {
		return fmt.Errorf("more than %d stages", maxStages)
	}
	if spec.GetStdinWindow() > stdinBufferMax {
		return fmt.Errorf("stdin_window above %d", stdinBufferMax)
	}
	if spec.GetTty() != nil && len(spec.GetStages()) != 1 {
		return errors.New("a tty command has exactly one stage")
	}
	for i, st := range spec.GetStages() {
		if len(st.GetArgv()) == 0 || st.GetArgv()[0] == "" {
			return fmt.Errorf("stage %d: empty argv", i)
		}
	}
	return nil
}

// signal delivers sig to every live stage; a Signal that races the spawn
// is held and delivered as soon as every stage exists.
func (c *shellCmd) signal(sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		// A killed command's remaining output is not waited for: a CP
		// that kills (e.g. its consumer went away) grants no more credit.
		c.abortOutput()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.spawned {
		c.pending = append(c.pending, sig)
		return
	}
	c.signalLocked(sig)
}

// signalNow signals the stages started so far (spawn cleanup, timeout).
func (c *shellCmd) signalNow(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.signalLocked(sig)
}

// signalLocked sends sig to every live stage's process group.
func (c *shellCmd) signalLocked(sig syscall.Signal) {
	if c.attached && sig == syscall.SIGKILL {
		// Killing an attach (the client went away, a timeout) detaches:
		// the user CMD is not the client's to kill.
		c.detach()
		return
	}
	for i, pid := range c.pids {
		if c.live[i] {
			// Each stage leads its own group; its descendants get it too.
			if err := unix.Kill(-pid, sig); err != nil {
				_ = unix.Kill(pid, sig)
			}
		}
	}
}

// run executes the command and sends its replies; it returns after the
// terminal reply (or after the Session died and every stage was reaped).
func (c *shellCmd) run(ctx context.Context) {
	defer close(c.done)
	log := c.sess.log
	started := time.Now()
	stages := c.spec.GetStages()

	exits, outR, inW, err := c.spawn()
	if err != nil {
		log.Warn().Str("event", "shell_command_done").Str("command_id", c.id).Str("outcome", "spawn_failed").
			Dur("duration", time.Since(started)).Err(err).Msg("spawn failed")
		c.sess.releaseShell(c)
		c.sess.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED, err.Error())
		c.maybeExit(exitCodeSpawnFailed)
		return
	}
	if c.attached {
		defer c.sess.srv.attaches.remove(c)
	}
	for i, st := range stages {
		log.Info().Str("event", "shell_command_started").Str("command_id", c.id).Int("stage", i).
			Strs("argv", st.GetArgv()).Str("cwd", stageCwd(st)).Uint32("uid", st.GetUid()).Uint32("gid", st.GetGid()).
			Uint32("timeout_seconds", c.spec.GetTimeoutSeconds()).Int("pid", c.pids[i]).Msg("stage started")
	}
	if c.attached {
		log.Info().Str("event", "shell_command_started").Str("command_id", c.id).Bool("attach", true).
			Int("pid", c.pids[0]).Msg("attached to the user CMD's terminal")
	}
	c.sess.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_Started{Started: &clawkerdv1.Started{}}})

	var stdinOnce sync.Once
	closeStdin := func() { stdinOnce.Do(func() { _ = inW.Close() }) }
	go c.writeStdin(inW, closeStdin)
	outDone := make(chan struct{})
	errDone := make(chan struct{})
	go c.readOutput(ctx, outR, false, outDone)
	if c.errR != nil {
		go c.readOutput(ctx, c.errR, true, errDone)
	} else {
		close(errDone)
	}

	var timeout <-chan time.Time
	if s := c.spec.GetTimeoutSeconds(); s > 0 {
		t := time.NewTimer(time.Duration(s) * time.Second)
		defer t.Stop()
		timeout = t.C
	}

	type stageResult struct {
		idx int
		st  exitStatus
	}
	results := make(chan stageResult, len(exits))
	for i, ch := range exits {
		go func() {
			defer recoverLog(log, "stage_wait")
			results <- stageResult{idx: i, st: <-ch}
		}()
	}

	timedOut, sessionGone := false, false
	sessDone := ctx.Done()
	statuses := make([]exitStatus, len(exits))
	for remaining := len(exits); remaining > 0; {
		select {
		case r := <-results:
			remaining--
			c.mu.Lock()
			c.live[r.idx] = false
			c.mu.Unlock()
			statuses[r.idx] = r.st
			se := &clawkerdv1.StageExit{StageIndex: uint32(r.idx), ExitCode: int32(r.st.ws.ExitStatus())}
			if r.st.ws.Signaled() {
				se.ExitCode, se.Signo = -1, int32(r.st.ws.Signal())
			}
			c.sess.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_StageExit{StageExit: se}})
		case <-timeout:
			timeout = nil
			timedOut = true
			c.abortOutput()
			c.signalNow(syscall.SIGKILL)
		case <-sessDone:
			sessDone = nil // handled once; keep waiting for the reaps
			sessionGone = true
			c.abortOutput()
			c.signalNow(syscall.SIGKILL)
		}
	}

	// Every stage is gone: stop feeding stdin, give background descendants
	// that inherited the output pipe a bounded grace, then stop reading.
	// The grace counts only time spent waiting for the pipe, not for
	// credit (see readOutput), so a slow consumer still gets every byte.
	closeStdin()
	close(c.stagesEnded)
	drainBy := time.Now().Add(c.sess.srv.cfg.OutputDrainGrace)
	_ = outR.SetReadDeadline(drainBy)
	if c.errR != nil {
		_ = c.errR.SetReadDeadline(drainBy)
	}
	<-outDone
	<-errDone
	c.closePTY()
	_ = outR.Close()
	if c.errR != nil {
		_ = c.errR.Close()
	}

	final := statuses[len(statuses)-1].code()
	// The id is free before the terminal reply below is sent (see
	// releaseShell).
	c.markReplied()
	c.sess.releaseShell(c)
	ev := log.Info().Str("event", "shell_command_done").Str("command_id", c.id).Dur("duration", time.Since(started))
	switch {
	case sessionGone:
		ev.Str("outcome", "session_closed").Int("exit_code", final).Msg("command killed: session closed")
	case c.stdinOverflowed():
		ev.Str("outcome", "stdin_overflow").Int("exit_code", final).Msg("command killed: stdin backlog overflow")
		c.sess.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR,
			fmt.Sprintf("stdin backlog exceeded %d bytes; command killed", stdinBufferMax))
		c.maybeExit(final)
	case timedOut:
		ev.Str("outcome", "timeout").Int("exit_code", final).Msg("command timed out")
		c.sess.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_TIMEOUT, fmt.Sprintf("timed out after %ds", c.spec.GetTimeoutSeconds()))
		c.maybeExit(exitCodeTimeout)
	case final == 0 && c.record != nil && c.recordFailed():
		ev.Str("outcome", "record_failed").Int("exit_code", final).Msg("one-time step ran but was not recorded")
		c.sess.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, "recording the step's completion failed")
	default:
		ev.Str("outcome", "done").Int("exit_code", final).Msg("command done")
		c.sess.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_Done{Done: &clawkerdv1.Done{FinalExitCode: int32(final)}}})
		if final != 0 {
			c.maybeExit(final)
		}
	}
}

// maybeExit asks the server to exit after this reply when the command
// carries exit_on_non_zero.
func (c *shellCmd) maybeExit(code int) {
	if c.spec.GetExitOnNonZero() {
		c.sess.requestExit(code)
	}
}
