package agent

import (
	"errors"
	"time"

	"google.golang.org/grpc/status"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// errRecvWait is RecvWithin's result when nothing arrived in time; the
// stream is intact and the next Recv gets the message when it comes.
var errRecvWait = errors.New("no response within the wait")

// timedReceiver is a Session stream whose receive can be bounded without
// ending the stream: the Executor waits on a step at most its timeout
// plus a grace, yet a step that never answers must leave the Session up.
type timedReceiver interface {
	clawkerdv1.ClawkerdService_SessionClient
	RecvWithin(d time.Duration) (*clawkerdv1.Response, error)
}

type recvResult struct {
	resp *clawkerdv1.Response
	err  error
}

// recvPump owns the stream's Recv on one goroutine and hands responses
// over a channel, so a reader can give up waiting (RecvWithin) while the
// Recv stays pending; a gRPC stream allows one receiver at a time, so
// every later reader (the init plan, then the Session demultiplexer) must
// go through the same pump. The goroutine ends with the stream.
type recvPump struct {
	clawkerdv1.ClawkerdService_SessionClient
	ch  chan recvResult
	end *recvResult // set once the stream failed: every later call returns it
}

func newRecvPump(s clawkerdv1.ClawkerdService_SessionClient) *recvPump {
	p := &recvPump{ClawkerdService_SessionClient: s, ch: make(chan recvResult, 1)}
	go func() {
		defer close(p.ch)
		for {
			r, err := s.Recv()
			select {
			case p.ch <- recvResult{resp: r, err: err}:
			case <-s.Context().Done():
				// Nobody reads any more (a caller that ran only the plan):
				// the stream is over, so is the pump; a late reader sees
				// the closed channel as the stream's end.
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// asTimedReceiver returns s itself when it can bound a receive, or a pump
// around it; in the latter case the pump owns s's Recv from now on.
func asTimedReceiver(s clawkerdv1.ClawkerdService_SessionClient) timedReceiver {
	if t, ok := s.(timedReceiver); ok {
		return t
	}
	return newRecvPump(s)
}

// Recv returns the next response or the stream's terminal error. Like the
// stream's own Recv it must not be called concurrently.
func (p *recvPump) Recv() (*clawkerdv1.Response, error) {
	if p.end != nil {
		return nil, p.end.err
	}
	r, ok := <-p.ch
	return p.take(r, ok)
}

// RecvWithin is Recv bounded by d; errRecvWait when nothing came.
func (p *recvPump) RecvWithin(d time.Duration) (*clawkerdv1.Response, error) {
	if p.end != nil {
		return nil, p.end.err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r, ok := <-p.ch:
		return p.take(r, ok)
	case <-t.C:
		return nil, errRecvWait
	}
}

func (p *recvPump) take(r recvResult, ok bool) (*clawkerdv1.Response, error) {
	if !ok {
		r.err = status.FromContextError(p.Context().Err()).Err()
	}
	if r.err != nil {
		p.end = &r
	}
	return r.resp, r.err
}
