package clawkerd

import (
	"os"
	"syscall"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// stdinBufferMax bounds the Stdin bytes a command holds that its first
// stage has not read yet. The Session's recv loop serves every command,
// Signal and Hello, so it must never wait for one command's stdin: frames
// are queued without blocking, and a command whose backlog would exceed
// this bound is SIGKILLed and ends with Error IO_ERROR (the frame is
// dropped). A CP that uses stdin_window never reaches it (its credit is
// at most this bound); the kill remains for a peer that ignores credit or
// sends without a window (the base contract).
const stdinBufferMax = 4 << 20

// stdinFrameCost is what a queued frame costs beyond its data, so a flood
// of empty frames is bounded too. It is also a frame's credit cost beyond
// its data under ShellCommand.stdin_window (a wire constant).
const stdinFrameCost = 64

func (m stdinMsg) cost() int { return len(m.data) + stdinFrameCost }

type stdinMsg struct {
	data  []byte
	close bool
}

// returnStdinCredit returns n written cost units to the CP once a quarter
// window has accumulated. While the CP waits for credit, the queue plus
// the pending credit hold all but at most one frame header of the window,
// so draining the queue always crosses the threshold: no deadlock.
func (c *shellCmd) returnStdinCredit(n int) {
	if c.stdinWindow == 0 {
		return
	}
	c.creditMu.Lock()
	defer c.creditMu.Unlock()
	c.stdinPending += int64(n)
	if c.replied || c.stdinPending < max(c.stdinWindow/4, 1) {
		return
	}
	grant := c.stdinPending
	c.stdinPending = 0
	c.sess.send(&clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_StdinCredit{
		StdinCredit: &clawkerdv1.StdinCredit{Bytes: uint64(grant)}}})
}

// markReplied stops stdin credit: the terminal reply follows.
func (c *shellCmd) markReplied() {
	c.creditMu.Lock()
	c.replied = true
	c.creditMu.Unlock()
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
	c.sess.srv.noteStdinBacklog(c.stdinBytes)
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
			if c.attached {
				c.detach() // an attach's CloseStdin is its detach
			}
			return
		}
		write(m.data)
		c.stdinWritten(m.cost())
		c.returnStdinCredit(m.cost())
	}
}
