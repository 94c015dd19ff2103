package clawkerd

import (
	"context"
	"errors"
	"io"
	"os"
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

// awaitCredit reserves how many bytes the reader may send next (at most
// limit), waiting for a grant while the window is used up; the reader
// refunds what it did not send (settleCredit). 0 means stop: the command
// is being killed or the Session ended. Reserving, rather than checking,
// keeps two readers (separate_stderr) within the window together.
func (c *shellCmd) awaitCredit(ctx context.Context, limit int) int {
	if c.window == 0 {
		return limit
	}
	for {
		c.mu.Lock()
		n := min(c.credit, int64(limit))
		if n > 0 {
			c.credit -= n
		}
		left := c.credit
		c.mu.Unlock()
		if n > 0 {
			if left > 0 {
				c.wakeCredit() // the other reader (separate_stderr) may be waiting
			}
			return int(n)
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

// settleCredit returns the unsent part of a reservation of reserved
// bytes of which sent were sent.
func (c *shellCmd) settleCredit(reserved, sent int) {
	if c.window == 0 || reserved == sent {
		return
	}
	c.mu.Lock()
	c.credit += int64(reserved - sent)
	c.mu.Unlock()
	c.wakeCredit()
}

// wakeCredit wakes a reader waiting for credit.
func (c *shellCmd) wakeCredit() {
	select {
	case c.creditReady <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// abortOutput stops the output reader for good (the command is killed).
func (c *shellCmd) abortOutput() {
	c.abortOnce.Do(func() { close(c.abort) })
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
func (c *shellCmd) readOutput(ctx context.Context, r *os.File, stderr bool, done chan<- struct{}) {
	defer close(done)
	defer recoverLog(c.sess.log, "output_reader")
	echo := c.spec.GetPrintOutput()
	buf := make([]byte, outputChunkMin)
	out := &clawkerdv1.OutputChunk{Stderr: stderr}
	resp := &clawkerdv1.Response{CommandId: c.id, Payload: &clawkerdv1.Response_Output{Output: out}}
	grace := c.sess.srv.cfg.OutputDrainGrace
	draining := false
	for {
		want := len(buf)
		if c.window > 0 && c.errR != nil {
			// Each reader may sit in Read holding its reservation (stdout
			// idle while stderr streams, or the reverse): stdout holds at
			// most half the window and stderr a quarter, so the other
			// always has the half a CP needs to see consumed to grant more.
			share := c.window / 2
			if stderr {
				share = c.window / 4
			}
			want = int(min(int64(want), max(share, 1)))
		}
		limit := c.awaitCredit(ctx, want)
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
		c.settleCredit(limit, n)
		if n > 0 {
			if echo {
				_, _ = c.sess.srv.cfg.Console.Write(buf[:n])
			}
			// Send encodes the message before it returns (the server has no
			// stats handler or binary log that would keep it), so the
			// buffer and the message are reused without a copy.
			out.Data = buf[:n]
			c.sess.send(resp)
			out.Data = nil
			if n >= coalesceMin && len(buf) < outputChunkMax && !stderr {
				buf = make([]byte, outputChunkMax) // bulk output: read in big chunks
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) &&
				!quietReadErr(err, c.spec.GetTty() != nil) {
				c.sess.log.Warn().Str("event", "output_read_failed").Str("command_id", c.id).Err(err).Msg("output read failed")
			}
			return
		}
	}
}
