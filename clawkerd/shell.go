package clawkerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// Output chunking. The reader starts with a small buffer and grows it to
// outputChunkMax after a bulk read (coalesceMin), so a chatty command costs little
// memory while bulk output (e.g. `head -c 256M`) moves in ~1 MiB chunks:
// every chunk is a message through clawkerd, the CP and the CLI, so per
// message costs (syscalls, TLS records, wake-ups) dominate at 32 KiB.
// Streaming memory stays O(chunk) per command regardless of volume (the
// output window, or gRPC's write quota, blocks the reader). outputChunkMax
// leaves room for the Response envelope so an encoded chunk fits a 1 MiB
// buffer tier.
const (
	outputChunkMin = 32 << 10
	outputChunkMax = 1<<20 - 1<<10
)

// Coalescing (flow-controlled commands only, i.e. exec through the CP):
// a writer that streams in small writes (busybox writes 4 KiB at a time)
// would otherwise wake the reader, and send one message through clawkerd,
// the CP and the CLI, per write. A read of at least coalesceMin bytes
// means bulk output, so the reader keeps reading for up to coalesceWait
// to gather coalesceTarget bytes into one chunk. Shorter reads (prompts,
// log lines) and the end of output (EOF) are sent at once.
const (
	coalesceMin    = 4 << 10
	coalesceTarget = 512 << 10
	coalesceWait   = 2 * time.Millisecond
)

// outputPipeSize is requested for the output pipe (F_SETPIPE_SZ; 1 MiB is
// Linux's default unprivileged maximum). With the 64 KiB default the
// writer blocks and the reader wakes every 64 KiB; failure is harmless.
const outputPipeSize = 1 << 20

// stdinBufferMax bounds the Stdin bytes a command holds that its first
// stage has not read yet. The Session's recv loop serves every command,
// Signal and Hello, so it must never wait for one command's stdin: frames
// are queued without blocking, and a command whose backlog would exceed
// this bound is SIGKILLed and ends with Error IO_ERROR (the frame is
// dropped). Stdin has no flow control on the wire (output does: see
// readOutput), so a CP that streams stdin faster than the process
// consumes it must pace itself below this bound.
const stdinBufferMax = 4 << 20

// stdinFrameCost is what a queued frame costs beyond its data, so a flood
// of empty frames is bounded too.
const stdinFrameCost = 64

func (m stdinMsg) cost() int { return len(m.data) + stdinFrameCost }

// maxStages bounds a pipeline so a request cannot exhaust fds.
const maxStages = 64

// Exit codes used by exit_on_non_zero for terminal errors.
const (
	exitCodeTimeout     = 124
	exitCodeSpawnFailed = 127
)

type stdinMsg struct {
	data  []byte
	close bool
}

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
}

func newShellCmd(sess *session, id string, spec *clawkerdv1.ShellCommand) *shellCmd {
	w := int64(spec.GetOutputWindow())
	return &shellCmd{id: id, spec: spec, sess: sess, stdinReady: make(chan struct{}, 1), done: make(chan struct{}),
		window: w, credit: w, creditReady: make(chan struct{}, 1), abort: make(chan struct{}),
		stagesEnded: make(chan struct{})}
}

// maxCredit caps the credit a command accumulates, so a CP that grants
// far more than it should cannot overflow the counter.
const maxCredit = 1 << 62

// addCredit applies an OutputCredit. It never blocks: the caller is the
// Session's only recv loop.
func (c *shellCmd) addCredit(n uint64) {
	if c.window == 0 || n == 0 {
		return // no flow control on this command: nothing to grant
	}
	c.mu.Lock()
	if n > maxCredit || c.credit+int64(n) > maxCredit {
		c.credit = maxCredit
	} else {
		c.credit += int64(n)
	}
	c.mu.Unlock()
	select {
	case c.creditReady <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// awaitCredit returns how many bytes the reader may send next (at most
// limit), waiting for a grant while the window is used up. 0 means stop:
// the command is being killed or the Session ended.
func (c *shellCmd) awaitCredit(ctx context.Context, limit int) int {
	if c.window == 0 {
		return limit
	}
	for {
		c.mu.Lock()
		avail := c.credit
		c.mu.Unlock()
		if avail > 0 {
			return int(min(avail, int64(limit)))
		}
		select {
		case <-c.creditReady:
		case <-c.abort:
			return 0
		case <-ctx.Done():
			return 0
		case <-c.sess.recvEnded:
			// The CP half-closed: no credit can come, and a command left
			// blocked on its full pipe would hold the Session open forever.
			c.sess.log.Warn().Str("event", "output_credit_unavailable").Str("command_id", c.id).
				Msg("session closed for sending with the output window used up; command killed")
			c.signalNow(syscall.SIGKILL)
			return 0
		}
	}
}

// spendCredit charges n sent bytes against the window.
func (c *shellCmd) spendCredit(n int) {
	if c.window == 0 {
		return
	}
	c.mu.Lock()
	c.credit -= int64(n)
	c.mu.Unlock()
}

// abortOutput stops the output reader for good (the command is killed).
func (c *shellCmd) abortOutput() {
	c.abortOnce.Do(func() { close(c.abort) })
}

// validateShell checks a ShellCommand before anything is spawned.
func validateShell(spec *clawkerdv1.ShellCommand) error {
	if len(spec.GetStages()) == 0 {
		return errors.New("no stages")
	}
	if len(spec.GetStages()) > maxStages {
		return fmt.Errorf("more than %d stages", maxStages)
	}
	for i, st := range spec.GetStages() {
		if len(st.GetArgv()) == 0 || st.GetArgv()[0] == "" {
			return fmt.Errorf("stage %d: empty argv", i)
		}
	}
	return nil
}

// enqueueStdin hands a Stdin/CloseStdin frame to the writer. It never
// blocks: the caller is the Session's only recv loop. A backlog beyond
// stdinBufferMax kills the command (see stdinBufferMax).
func (c *shellCmd) enqueueStdin(m stdinMsg) {
	c.mu.Lock()
	if c.stdinShut {
		c.mu.Unlock()
		c.sess.log.Debug().Str("event", "stdin_after_close").Str("command_id", c.id).Msg("stdin frame after CloseStdin dropped")
		return
	}
	if !m.close && c.stdinBytes+m.cost() > stdinBufferMax {
		c.stdinShut = true
		c.stdinQ = nil
		// Only a command that still runs is killed and reported as failed;
		// stdin for one whose stages all exited is simply dropped.
		running := !c.spawned
		for _, l := range c.live {
			running = running || l
		}
		c.overflow = running
		c.abortOutput()
		if !c.spawned {
			c.pending = append(c.pending, syscall.SIGKILL)
		} else {
			c.signalLocked(syscall.SIGKILL)
		}
		c.mu.Unlock()
		c.sess.log.Warn().Str("event", "stdin_overflow").Str("command_id", c.id).Int("limit_bytes", stdinBufferMax).
			Bool("killed", running).Msg("stdin backlog exceeded; command killed")
		return
	}
	if m.close {
		c.stdinShut = true
	}
	c.stdinQ = append(c.stdinQ, m)
	c.stdinBytes += m.cost()
	c.mu.Unlock()
	select {
	case c.stdinReady <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// nextStdin pops the oldest queued frame, if any.
func (c *shellCmd) nextStdin() (stdinMsg, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.stdinQ) == 0 {
		return stdinMsg{}, false
	}
	m := c.stdinQ[0]
	c.stdinQ[0] = stdinMsg{}
	c.stdinQ = c.stdinQ[1:]
	return m, true
}

// stdinWritten releases n (a frame's cost) once the pipe took the frame.
func (c *shellCmd) stdinWritten(n int) {
	c.mu.Lock()
	c.stdinBytes -= n
	c.mu.Unlock()
}

func (c *shellCmd) stdinOverflowed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.overflow
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
		c.sess.sendError(c.id, clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED, err.Error())
		c.maybeExit(exitCodeSpawnFailed)
		return
	}
	for i, st := range stages {
		log.Info().Str("event", "shell_command_started").Str("command_id", c.id).Int("stage", i).
			Strs("argv", st.GetArgv()).Str("cwd", stageCwd(st)).Uint32("uid", st.GetUid()).Uint32("gid", st.GetGid()).
			Uint32("timeout_seconds", c.spec.GetTimeoutSeconds()).Int("pid", c.pids[i]).Msg("stage started")
	}
	c.sess.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_Started{Started: &clawkerdv1.Started{}}})

	var stdinOnce sync.Once
	closeStdin := func() { stdinOnce.Do(func() { _ = inW.Close() }) }
	go c.writeStdin(inW, closeStdin)
	outDone := make(chan struct{})
	go c.readOutput(ctx, outR, outDone)

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
	statuses := make([]exitStatus, len(stages))
	for remaining := len(stages); remaining > 0; {
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
	_ = outR.SetReadDeadline(time.Now().Add(c.sess.srv.cfg.OutputDrainGrace))
	<-outDone
	_ = outR.Close()

	final := statuses[len(statuses)-1].code()
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

// spawn wires the pipeline and starts every stage. Stage i's stdout feeds
// stage i+1's stdin; every stage's stderr and the last stdout share one
// pipe, so the kernel merges them in write order.
func (c *shellCmd) spawn() (exits []<-chan exitStatus, outR, inW *os.File, err error) {
	stages := c.spec.GetStages()
	var parentClose []*os.File // child ends, closed in clawkerd after start
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				_ = f.Close()
			}
		}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll([]*os.File{inR, inW})
		return nil, nil, nil, fmt.Errorf("output pipe: %w", err)
	}
	parentClose = append(parentClose, inR, outW)
	growPipe(outR)
	fail := func(e error) ([]<-chan exitStatus, *os.File, *os.File, error) {
		c.signalNow(syscall.SIGKILL)
		for _, ch := range exits {
			<-ch
		}
		closeAll(parentClose)
		closeAll([]*os.File{inW, outR})
		return nil, nil, nil, e
	}

	prevOut := inR
	for i, st := range stages {
		stdout := outW
		var nextIn *os.File
		if i < len(stages)-1 {
			r, w, perr := os.Pipe()
			if perr != nil {
				return fail(fmt.Errorf("stage pipe: %w", perr))
			}
			parentClose = append(parentClose, r, w)
			stdout, nextIn = w, r
		}
		cmd, cerr := buildStageCmd(st)
		if cerr != nil {
			return fail(fmt.Errorf("stage %d: %w", i, cerr))
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = prevOut, stdout, outW
		pid, ch, serr := c.sess.srv.procs.start(cmd)
		if serr != nil {
			return fail(fmt.Errorf("stage %d: %w", i, serr))
		}
		c.mu.Lock()
		c.pids = append(c.pids, pid)
		c.live = append(c.live, true)
		c.mu.Unlock()
		exits = append(exits, ch)
		prevOut = nextIn
	}
	closeAll(parentClose)
	c.mu.Lock()
	c.spawned = true
	for _, sig := range c.pending {
		c.signalLocked(sig)
	}
	c.pending = nil
	c.mu.Unlock()
	return exits, outR, inW, nil
}

// growPipe asks for a larger pipe buffer. It goes through SyscallConn:
// os.File.Fd would switch the file to blocking mode and break the read
// deadlines the drain grace relies on.
func growPipe(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, outputPipeSize)
	})
}

// buildStageCmd prepares one stage: resolved argv[0] (searched on the
// stage's own PATH), env overlay, cwd, own process group, privilege drop.
func buildStageCmd(st *clawkerdv1.PipeStage) (*exec.Cmd, error) {
	env := overlayEnv(os.Environ(), st.GetEnv())
	path, err := lookPath(st.GetArgv()[0], envValue(env, "PATH"))
	if err != nil {
		return nil, err
	}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if st.GetUid() != 0 || st.GetGid() != 0 {
		attr.Credential = &syscall.Credential{Uid: st.GetUid(), Gid: st.GetGid(), Groups: []uint32{}}
	}
	return &exec.Cmd{
		Path:        path,
		Args:        st.GetArgv(),
		Env:         env,
		Dir:         stageCwd(st),
		SysProcAttr: attr,
	}, nil
}

func stageCwd(st *clawkerdv1.PipeStage) string {
	if st.GetCwd() == "" {
		return "/"
	}
	return st.GetCwd()
}

// overlayEnv returns base with the entries of over replacing or adding.
func overlayEnv(base []string, over map[string]string) []string {
	if len(over) == 0 {
		return base
	}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, replaced := over[k]; !replaced {
			out = append(out, kv)
		}
	}
	keys := make([]string, 0, len(over))
	for k := range over {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+over[k])
	}
	return out
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPath resolves file like execvp, but on the given PATH rather than
// clawkerd's own, since a stage may override PATH.
func lookPath(file, pathEnv string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", fmt.Errorf("exec %q: %w", file, err)
		}
		return file, nil
	}
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %q: executable file not found in PATH", file)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// writeStdin feeds initial_stdin, then queued Stdin frames, until
// CloseStdin or the command ends. A child that stopped reading (EPIPE) only
// costs the remaining frames.
func (c *shellCmd) writeStdin(w *os.File, closeStdin func()) {
	defer recoverLog(c.sess.log, "stdin_writer")
	defer closeStdin()
	broken := false
	write := func(b []byte) {
		if broken || len(b) == 0 {
			return
		}
		if _, err := w.Write(b); err != nil {
			broken = true
			c.sess.log.Debug().Str("event", "stdin_write_failed").Str("command_id", c.id).Err(err).Msg("stdin write failed")
		}
	}
	write(c.spec.GetInitialStdin())
	for {
		m, ok := c.nextStdin()
		if !ok {
			select {
			case <-c.stdinReady:
				continue
			case <-c.done:
				return
			}
		}
		if m.close {
			return
		}
		write(m.data)
		c.stdinWritten(m.cost())
	}
}

// coalesce reads more into b, which holds n bytes, until it holds
// coalesceTarget bytes (or is full), coalesceWait has passed, or the read
// fails. A deadline it set is cleared unless the stages ended meanwhile:
// then readOutput re-arms the drain deadline before its next Read.
func (c *shellCmd) coalesce(r *os.File, b []byte, n int) (int, error) {
	target := min(len(b), coalesceTarget)
	if n >= target {
		return n, nil
	}
	_ = r.SetReadDeadline(time.Now().Add(coalesceWait))
	var err error
	for n < target && err == nil {
		var m int
		m, err = r.Read(b[n:target])
		n += m
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil // the wait is over; EOF and real errors still end the reader
	}
	select {
	case <-c.stagesEnded:
	default:
		_ = r.SetReadDeadline(time.Time{})
	}
	return n, err
}

// readOutput streams the merged output as OutputChunks, echoing to the
// console when print_output is set. With an output window it reads only
// what it may send: while the window is used up it stops reading, the pipe
// fills and the stages block on write, so memory stays O(chunk) and
// nothing is dropped. Once every stage exited, the drain grace is a budget
// of time blocked in Read (run sets the first deadline to interrupt a
// blocked Read; the reader re-arms the rest around credit waits).
func (c *shellCmd) readOutput(ctx context.Context, r *os.File, done chan<- struct{}) {
	defer close(done)
	defer recoverLog(c.sess.log, "output_reader")
	echo := c.spec.GetPrintOutput()
	buf := make([]byte, outputChunkMin)
	out := &clawkerdv1.OutputChunk{}
	resp := &clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_Output{Output: out}}
	grace := c.sess.srv.cfg.OutputDrainGrace
	draining := false
	for {
		limit := c.awaitCredit(ctx, len(buf))
		if limit == 0 {
			return
		}
		if !draining {
			select {
			case <-c.stagesEnded:
				draining = true
			default:
			}
		}
		var t0 time.Time
		if draining {
			if grace <= 0 {
				return
			}
			t0 = time.Now()
			_ = r.SetReadDeadline(t0.Add(grace))
		}
		n, err := r.Read(buf[:limit])
		if draining {
			grace -= time.Since(t0)
		} else if err == nil && n >= coalesceMin && c.window > 0 {
			n, err = c.coalesce(r, buf[:limit], n)
		}
		if n > 0 {
			if echo {
				_, _ = c.sess.srv.cfg.Console.Write(buf[:n])
			}
			// Send encodes the message before it returns (the server has no
			// stats handler or binary log that would keep it), so the
			// buffer and the message are reused without a copy.
			out.Data = buf[:n]
			c.spendCredit(n)
			c.sess.send(resp)
			out.Data = nil
			if n >= coalesceMin && len(buf) < outputChunkMax {
				buf = make([]byte, outputChunkMax) // bulk output: read in big chunks
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
				c.sess.log.Warn().Str("event", "output_read_failed").Str("command_id", c.id).Err(err).Msg("output read failed")
			}
			return
		}
	}
}
