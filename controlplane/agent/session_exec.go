package agent

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// ExecOutputWindow is the output window (ShellCommand.output_window) of
// every exec: clawkerd sends at most this many output bytes the handle has
// not credited back, so the handle's queue never holds more, while the
// demultiplexer never blocks on one consumer. A slow consumer slows the
// command's writer down (clawkerd stops reading its pipe); nothing is
// dropped. 4 MiB keeps a fast consumer streaming: credit goes back every
// half window, so the other half is in flight meanwhile.
const ExecOutputWindow = 4 << 20

// unflowedQueueMax bounds the output an exec handle holds for its reader
// when the peer has no flow control (no output window): past it the exec
// fails with IO_ERROR rather than grow the CP's memory without bound.
const unflowedQueueMax = 64 << 20

// ExecHandle is one command running over a Session (admin Exec). The
// caller reads Responses to the end or calls Close; either way the handle's
// goroutine ends.
type ExecHandle struct {
	id  string
	s   *session
	ctx context.Context // the caller's: bounds Stdin/CloseStdin/Signal waits

	out      chan *clawkerdv1.Response
	quit     chan struct{} // closed by Close: the pump stops delivering
	finished chan struct{} // closed once the terminal response is queued

	mu         sync.Mutex
	cond       *sync.Cond
	queue      []*clawkerdv1.Response
	window     int // output_window granted to clawkerd; 0: peer without flow control
	inflight   int // output bytes received and not credited back (or, window 0, not consumed) yet
	consumed   int // output bytes delivered to the reader, not credited yet
	done       bool
	closed     bool
	stopCancel func() bool // unregisters the ctx-cancel kill once finished
	quitOnce   sync.Once
	killOnce   sync.Once

	// Stdin credit (exec_stdin.go): stdinWindow 0 means the peer has no
	// stdin-credit/v1 and Stdin goes out unpaced (the base contract).
	stdinWindow int
	stdinCredit int64
	stdinWaits  int           // times Stdin waited for credit (tests)
	stdinWake   chan struct{} // cap 1: wakes Stdin after a grant
}

func newExecHandle(ctx context.Context, id string, s *session, window int) *ExecHandle {
	h := &ExecHandle{id: id, s: s, ctx: ctx, window: window, out: make(chan *clawkerdv1.Response),
		quit: make(chan struct{}), finished: make(chan struct{}), stdinWake: make(chan struct{}, 1)}
	h.cond = sync.NewCond(&h.mu)
	go h.pump()
	return h
}

// ID is the command_id on the wire.
func (h *ExecHandle) ID() string { return h.id }

// Responses yields Started, OutputChunk, StageExit and finally exactly one
// Done or Error (a synthetic IO_ERROR when the Session ends first); it is
// closed after that, or as soon as Close is called.
func (h *ExecHandle) Responses() <-chan *clawkerdv1.Response { return h.out }

// Stdin writes to the first stage's stdin. With stdin credit it blocks
// while the window is used up (see ExecStdinWindow).
func (h *ExecHandle) Stdin(data []byte) error {
	h.mu.Lock()
	paced := h.stdinWindow > 0
	h.mu.Unlock()
	if paced {
		return h.sendStdin(data)
	}
	return h.s.send(h.ctx, &clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_Stdin{
		Stdin: &clawkerdv1.Stdin{Data: data}}})
}

// CloseStdin closes the first stage's stdin.
func (h *ExecHandle) CloseStdin() error {
	return h.s.send(h.ctx, &clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_CloseStdin{
		CloseStdin: &clawkerdv1.CloseStdin{}}})
}

// Signal delivers signo to every stage of the command.
func (h *ExecHandle) Signal(signo int32) error {
	return h.s.send(h.ctx, signalCommand(h.id, signo))
}

func signalCommand(id string, signo int32) *clawkerdv1.Command {
	return &clawkerdv1.Command{CommandId: id, Payload: &clawkerdv1.Command_Signal{
		Signal: &clawkerdv1.Signal{Signo: signo}}}
}

// Close releases the handle: undelivered responses are discarded, the
// Responses channel is closed, and a command still running is SIGKILLed.
// It never waits on the stream (the kill goes out in the background) and
// is safe to call more than once, concurrently with a reader.
func (h *ExecHandle) Close() error {
	h.quitOnce.Do(func() { close(h.quit) })
	h.mu.Lock()
	running := !h.done
	h.closed = true
	h.queue = nil
	h.cond.Signal()
	h.mu.Unlock()
	if running {
		go h.kill("closed")
	}
	return nil
}

// kill SIGKILLs the command once (caller cancelled or closed the handle).
// The send is bounded by the Session's stall watchdog; if it fails the
// handle is failed locally, since clawkerd may never answer it.
func (h *ExecHandle) kill(why string) {
	defer h.s.recoverLog("exec_kill")
	h.killOnce.Do(func() {
		h.mu.Lock()
		done := h.done
		h.mu.Unlock()
		if done {
			return
		}
		err := h.s.send(context.Background(), signalCommand(h.id, int32(syscall.SIGKILL)))
		if err == nil {
			// clawkerd's Done/Error ends the handle; a peer that reads but
			// never answers must not hold it forever.
			time.AfterFunc(h.s.killGrace, func() {
				defer h.s.recoverLog("exec_kill_grace")
				h.mu.Lock()
				done := h.done
				h.mu.Unlock()
				if !done {
					h.s.log.Warn().Str("event", "agent_exec_kill_unanswered").Str("command_id", h.id).
						Dur("waited", h.s.killGrace).Msg("no reply to SIGKILL; failing the handle")
					h.s.abandon(h, "no reply to SIGKILL")
				}
			})
			return
		}
		h.s.log.Warn().Str("event", "agent_exec_kill_failed").Str("command_id", h.id).Str("why", why).
			Err(err).Msg("could not SIGKILL the command; failing its handle")
		h.s.abandon(h, fmt.Sprintf("kill failed: %v", err))
	})
}

// push queues a non-terminal response. It runs on the demultiplexer and
// never blocks. Output beyond the window is a protocol violation by the
// peer: the exec ends with IO_ERROR and is killed, never a silent drop.
func (h *ExecHandle) push(r *clawkerdv1.Response) {
	size := len(r.GetOutput().GetData())
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return
	}
	h.inflight += size
	limit := h.window
	if limit == 0 {
		limit = unflowedQueueMax
	}
	if size > 0 && h.inflight > limit {
		inflight := h.inflight
		h.mu.Unlock()
		msg := fmt.Sprintf("output window of %d bytes exceeded by the agent; output incomplete", h.window)
		if h.window == 0 {
			msg = fmt.Sprintf("the agent has no output flow control and the reader fell %d bytes behind; output incomplete", limit)
		}
		h.s.log.Warn().Str("event", "agent_exec_window_violated").Str("command_id", h.id).
			Int("inflight_bytes", inflight).Int("window_bytes", h.window).Msg(msg)
		go func() {
			defer h.s.recoverLog("exec_violation_kill")
			_ = h.s.send(context.Background(), signalCommand(h.id, int32(syscall.SIGKILL)))
		}()
		h.s.abandon(h, msg)
		return
	}
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.queue = append(h.queue, r)
	h.cond.Signal()
	h.mu.Unlock()
}

// consumedOutput records n output bytes taken by the reader and, once half
// a window has been taken, returns that much credit to clawkerd. It runs
// on the pump, so a slow Send delays only this command.
func (h *ExecHandle) consumedOutput(n int) {
	if n == 0 {
		return
	}
	h.mu.Lock()
	if h.window == 0 {
		// No flow control on this peer: nothing to grant, only the
		// handle's own backlog shrinks.
		h.inflight -= n
		h.mu.Unlock()
		return
	}
	h.consumed += n
	grant := 0
	if h.consumed >= h.window/2 && !h.done {
		grant = h.consumed
		h.consumed = 0
		h.inflight -= grant
	}
	h.mu.Unlock()
	if grant == 0 {
		return
	}
	err := h.s.send(context.Background(), &clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_OutputCredit{
		OutputCredit: &clawkerdv1.OutputCredit{Bytes: uint64(grant)}}})
	if err != nil {
		// The Session is gone or torn down: its end fails this handle.
		h.s.log.Debug().Str("event", "agent_exec_credit_failed").Str("command_id", h.id).Err(err).Msg("credit not sent")
	}
}

// finish queues the terminal response; the pump closes the channel after
// delivering it.
func (h *ExecHandle) finish(r *clawkerdv1.Response) {
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return
	}
	h.done = true
	if !h.closed {
		h.queue = append(h.queue, r)
	}
	stop := h.stopCancel
	h.cond.Signal()
	h.mu.Unlock()
	close(h.finished)
	if stop != nil {
		stop()
	}
}

// close ends the handle with nothing more to deliver (send failed).
func (h *ExecHandle) close() {
	h.finish(nil)
}

// onCancel arranges a SIGKILL when ctx is cancelled before the command
// ends; the registration is dropped as soon as it ends.
func (h *ExecHandle) onCancel(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { h.kill("cancelled") })
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		stop()
		return
	}
	h.stopCancel = stop
	h.mu.Unlock()
}

func (h *ExecHandle) pump() {
	defer close(h.out)
	defer h.s.recoverLog("exec_pump")
	for {
		h.mu.Lock()
		for len(h.queue) == 0 && !h.done && !h.closed {
			h.cond.Wait()
		}
		if h.closed || len(h.queue) == 0 {
			h.mu.Unlock()
			return
		}
		r := h.queue[0]
		h.queue[0] = nil
		h.queue = h.queue[1:]
		h.mu.Unlock()
		if r == nil {
			return // close(): ended without a response
		}
		select {
		case h.out <- r:
		case <-h.quit:
			return
		}
		h.consumedOutput(len(r.GetOutput().GetData()))
	}
}

// Resize sets the terminal size of a command started with a tty.
func (h *ExecHandle) Resize(rows, cols uint32) error {
	return h.s.send(h.ctx, &clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_Resize{
		Resize: &clawkerdv1.Resize{Rows: rows, Cols: cols}}})
}
