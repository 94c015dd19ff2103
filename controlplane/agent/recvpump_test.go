package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// chanStream is a Session client stream fed by a channel.
type chanStream struct {
	grpc.ClientStream
	ctx context.Context
	in  chan *clawkerdv1.Response
}

func (s *chanStream) Context() context.Context       { return s.ctx }
func (s *chanStream) Send(*clawkerdv1.Command) error { return nil }
func (s *chanStream) Recv() (*clawkerdv1.Response, error) {
	select {
	case r := <-s.in:
		return r, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// A bounded wait gives up without losing the message that comes later,
// and the stream's end reaches every later Recv.
func TestRecvPumpBoundedWaitKeepsTheStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := &chanStream{ctx: ctx, in: make(chan *clawkerdv1.Response)}
	p := asTimedReceiver(cs)
	if _, err := p.RecvWithin(20 * time.Millisecond); !errors.Is(err, errRecvWait) {
		t.Fatalf("empty wait: %v", err)
	}
	go func() { cs.in <- &clawkerdv1.Response{CommandId: "late"} }()
	if r, err := p.Recv(); err != nil || r.GetCommandId() != "late" {
		t.Fatalf("late message: %v %v", r, err)
	}
	if asTimedReceiver(p) != p {
		t.Fatal("a pump was wrapped again")
	}
	cancel()
	for range 2 {
		if _, err := p.RecvWithin(time.Second); err == nil || errors.Is(err, errRecvWait) {
			t.Fatalf("after the end: %v", err)
		}
	}
}
