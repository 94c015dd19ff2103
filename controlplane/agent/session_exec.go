package agent

import (
	"sync"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// execQueueMax bounds the output an ExecHandle buffers for a slow reader.
// The demultiplexer must never block on one consumer (it would stall
// every other command on the Session), so beyond this output chunks are
// dropped and the drop is logged; terminal responses are always kept.
const execQueueMax = 8 << 20

// ExecHandle is one command running over a Session (admin Exec).
type ExecHandle struct {
	id string
	s  *session

	out      chan *clawkerdv1.Response
	finished chan struct{} // closed once the terminal response is queued

	mu        sync.Mutex
	cond      *sync.Cond
	queue     []*clawkerdv1.Response
	queued    int
	done      bool
	dropped   int
	closeOnce sync.Once
}

func newExecHandle(id string, s *session) *ExecHandle {
	h := &ExecHandle{id: id, s: s, out: make(chan *clawkerdv1.Response), finished: make(chan struct{})}
	h.cond = sync.NewCond(&h.mu)
	go h.pump()
	return h
}

// ID is the command_id on the wire.
func (h *ExecHandle) ID() string { return h.id }

// Responses yields Started, OutputChunk, StageExit and finally exactly one
// Done or Error (a synthetic IO_ERROR when the Session ends first); it is
// closed after that.
func (h *ExecHandle) Responses() <-chan *clawkerdv1.Response { return h.out }

// Stdin writes to the first stage's stdin.
func (h *ExecHandle) Stdin(data []byte) error {
	return h.s.send(&clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_Stdin{
		Stdin: &clawkerdv1.Stdin{Data: data}}})
}

// CloseStdin closes the first stage's stdin.
func (h *ExecHandle) CloseStdin() error {
	return h.s.send(&clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_CloseStdin{
		CloseStdin: &clawkerdv1.CloseStdin{}}})
}

// Signal delivers signo to every stage of the command.
func (h *ExecHandle) Signal(signo int32) error {
	return h.s.send(&clawkerdv1.Command{CommandId: h.id, Payload: &clawkerdv1.Command_Signal{
		Signal: &clawkerdv1.Signal{Signo: signo}}})
}

func (h *ExecHandle) push(r *clawkerdv1.Response) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return
	}
	size := len(r.GetOutput().GetData())
	if size > 0 && h.queued+size > execQueueMax {
		h.dropped++
		if h.dropped == 1 {
			h.s.log.Warn().Str("event", "agent_exec_output_dropped").Str("command_id", h.id).
				Msg("exec consumer too slow; output dropped")
		}
		return
	}
	h.queued += size
	h.queue = append(h.queue, r)
	h.cond.Signal()
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
	h.queue = append(h.queue, r)
	h.cond.Signal()
	h.mu.Unlock()
	close(h.finished)
}

// close ends the handle with nothing more to deliver (send failed).
func (h *ExecHandle) close() {
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return
	}
	h.done = true
	h.cond.Signal()
	h.mu.Unlock()
	close(h.finished)
}

func (h *ExecHandle) pump() {
	defer h.closeOnce.Do(func() { close(h.out) })
	for {
		h.mu.Lock()
		for len(h.queue) == 0 && !h.done {
			h.cond.Wait()
		}
		if len(h.queue) == 0 && h.done {
			h.mu.Unlock()
			return
		}
		r := h.queue[0]
		h.queue = h.queue[1:]
		h.queued -= len(r.GetOutput().GetData())
		h.mu.Unlock()
		// A reader that abandons the handle would leak this goroutine; the
		// admin server always drains to the terminal response.
		h.out <- r
	}
}
