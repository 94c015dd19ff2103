package cli

import "io"

// Stdin framing for `exec -i`. Every Stdin message costs a trip through
// the CLI, the CP and clawkerd (marshal, HTTP/2 frames, TLS records,
// credit, one pipe write), so bulk input should travel in large messages.
// A reader goroutine keeps reading while a Send waits on flow control,
// and the sender takes everything already read, up to stdinMessageMax,
// as one message: interactive input (one read at a time) still goes out
// at once, and a producer faster than the path is batched with no timer.
const (
	stdinReadSize   = 64 << 10  // a pipe's default capacity: one read drains it
	stdinMessageMax = 256 << 10 // the CP's Stdin frame bound (agent.stdinFrameMax)
	stdinReadAhead  = 4         // reads queued while a Send waits: bounds memory
)

// stdinRead is one Read's result; data is owned by the receiver.
type stdinRead struct {
	data []byte
	err  error
}

// readStdin reads in until an error (io.EOF included), handing each read
// to the returned channel, which is closed after the error. It stops early
// when stop is closed.
func readStdin(in io.Reader, stop <-chan struct{}) <-chan stdinRead {
	ch := make(chan stdinRead, stdinReadAhead)
	go func() {
		defer close(ch)
		buf := make([]byte, stdinReadSize)
		for {
			n, err := in.Read(buf)
			// A copy of the n bytes read: a keystroke must not pin 64 KiB.
			select {
			case ch <- stdinRead{data: append([]byte(nil), buf[:n]...), err: err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// stdinBatcher joins queued reads into messages.
type stdinBatcher struct {
	reads <-chan stdinRead
	held  *stdinRead // a read too big to join the previous message
}

// next returns the data of the next read plus whatever further reads are
// already queued, up to stdinMessageMax bytes, and the error that ended
// the input, if it was met (nil while the input goes on). ok is false once
// the reads are drained.
func (b *stdinBatcher) next() (data []byte, err error, ok bool) {
	first := b.held
	b.held = nil
	if first == nil {
		r, more := <-b.reads
		if !more {
			return nil, nil, false
		}
		first = &r
	}
	data, err = first.data, first.err
	for err == nil && len(data) < stdinMessageMax {
		select {
		case r, more := <-b.reads:
			if !more {
				return data, nil, true
			}
			if len(data)+len(r.data) > stdinMessageMax {
				b.held = &r
				return data, nil, true
			}
			data = append(data, r.data...)
			err = r.err
		default:
			return data, nil, true
		}
	}
	return data, err, true
}
