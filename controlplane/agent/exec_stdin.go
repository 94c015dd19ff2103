package agent

import (
	"fmt"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// ExecStdinWindow is the stdin credit (ShellCommand.stdin_window) every
// exec to a peer announcing stdin-credit/v1 starts with. Stdin blocks
// while it is used up, so the admin Exec stream stops being read and gRPC
// flow control pushes back to the CLI, which stops reading its stdin: a
// fast producer is slowed down instead of overflowing clawkerd's backlog
// (4 MiB, which this stays well below). clawkerd returns credit in
// quarter windows as the command reads, so the rest streams meanwhile.
const ExecStdinWindow = 2 << 20

// stdinFrameCost is a Stdin frame's credit cost beyond its data (the wire
// constant of ShellCommand.stdin_window).
const stdinFrameCost = 64

// stdinFrameMax bounds one Stdin frame's data, so a large admin message
// goes out as several frames rather than waiting for a whole window.
const stdinFrameMax = 256 << 10

// addStdinCredit applies a StdinCredit from clawkerd. It runs on the
// demultiplexer and never blocks.
func (h *ExecHandle) addStdinCredit(n uint64) {
	h.mu.Lock()
	if h.stdinWindow > 0 {
		// Never above the window: a peer granting more than it was
		// charged would otherwise let the CP overrun its backlog bound.
		h.stdinCredit = min(h.stdinCredit+int64(min(n, uint64(h.stdinWindow))), int64(h.stdinWindow))
	}
	h.mu.Unlock()
	select {
	case h.stdinWake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// sendStdin sends data as Stdin frames within the credit window, waiting
// while it is used up. The wait ends with the caller's ctx, the command's
// end (the rest is dropped, as clawkerd drops stdin for an ended command)
// or the Session's.
func (h *ExecHandle) sendStdin(data []byte) error {
	if len(data) == 0 {
		return nil // an empty frame writes nothing; it would only cost credit
	}
	for len(data) > 0 {
		n, err := h.awaitStdinCredit(min(len(data), stdinFrameMax))
		if err != nil || n == 0 {
			return err
		}
		if err := h.s.send(h.ctx, &clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_Stdin{
			Stdin: &clawkerdv1.Stdin{Data: data[:n]}}}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// awaitStdinCredit reserves credit for up to limit data bytes and returns
// how many it may send; 0 with a nil error means the command has ended.
func (h *ExecHandle) awaitStdinCredit(limit int) (int, error) {
	for {
		h.mu.Lock()
		if h.done {
			h.mu.Unlock()
			return 0, nil
		}
		if avail := h.stdinCredit - stdinFrameCost; avail > 0 {
			n := int(min(avail, int64(limit)))
			h.stdinCredit -= int64(n + stdinFrameCost)
			h.mu.Unlock()
			return n, nil
		}
		h.stdinWaits++
		h.mu.Unlock()
		select {
		case <-h.stdinWake:
		case <-h.finished:
		case <-h.ctx.Done():
			return 0, h.ctx.Err()
		case <-h.s.gone:
			return 0, fmt.Errorf("stdin to %s: %w", h.s.containerID, ErrNoSession)
		}
	}
}
