package agent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/logger"
)

// wedgedClawkerd is a ClawkerdService whose Session handler can stop
// reading (so the HTTP/2 window fills) and records what it did read.
type wedgedClawkerd struct {
	clawkerdv1.UnimplementedClawkerdServiceServer
	// readNone: never Recv; the handler just holds the stream.
	readNone bool
	// ignoreSignals: read Signals but never answer them.
	ignoreSignals bool
	// chatty: answer a ShellCommand with Started and output, then end it
	// (Error) only when a Signal arrives.
	mu      sync.Mutex
	signals []int32
}

func (f *wedgedClawkerd) signalled() []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int32(nil), f.signals...)
}

func (f *wedgedClawkerd) Session(stream clawkerdv1.ClawkerdService_SessionServer) error {
	if f.readNone {
		<-stream.Context().Done()
		return nil
	}
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return nil
		}
		id := cmd.GetCommandId()
		switch p := cmd.GetPayload().(type) {
		case *clawkerdv1.Command_Shell:
			_ = stream.Send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Started{Started: &clawkerdv1.Started{}}})
			for i := 0; i < 8; i++ {
				_ = stream.Send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Output{
					Output: &clawkerdv1.OutputChunk{Data: bytes.Repeat([]byte("o"), 1024)}}})
			}
		case *clawkerdv1.Command_Signal:
			f.mu.Lock()
			f.signals = append(f.signals, p.Signal.GetSigno())
			f.mu.Unlock()
			if f.ignoreSignals {
				continue
			}
			_ = stream.Send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Error{
				Error: &clawkerdv1.Error{Code: clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR, Message: "killed"}}})
		}
	}
}

// startSession serves f on loopback (fixed 64 KiB windows, so a peer that
// stops reading stalls the sender quickly) and returns a running CP-side
// session on it.
func startSession(t *testing.T, f *wedgedClawkerd, stall time.Duration) (*session, <-chan error) {
	t.Helper()
	s := openSession(t, f, stall)
	ran := make(chan error, 1)
	go func() { ran <- s.run() }()
	return s, ran
}

// openSession is startSession without the demultiplexer (the caller owns
// Recv).
func openSession(t *testing.T, f *wedgedClawkerd, stall time.Duration) *session {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	clawkerdv1.RegisterClawkerdServiceServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := clawkerdv1.NewClawkerdServiceClient(conn).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := newSession("c1", stream, cancel, logger.Nop())
	s.stall = stall
	s.killGrace = time.Hour // tests that want the kill grace shorten it
	return s
}

// terminal waits for h's last response and for Responses to close.
func terminal(t *testing.T, h *ExecHandle) *clawkerdv1.Response {
	t.Helper()
	var last *clawkerdv1.Response
	deadline := time.After(30 * time.Second)
	for {
		select {
		case r, ok := <-h.Responses():
			if !ok {
				return last
			}
			last = r
		case <-deadline:
			t.Fatal("handle never finished")
			return nil
		}
	}
}

// A peer that stops reading fills the HTTP/2 window; Stdin sends then block
// holding the send lock. Cancelling the exec must still end the handle:
// the stall watchdog tears the Session down, which unblocks every Send and
// fails every handle.
func TestCancelWithStuckStreamEnds(t *testing.T) {
	s, ran := startSession(t, &wedgedClawkerd{readNone: true}, 200*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := s.exec(ctx, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"cat"}}}})
	if err != nil {
		t.Fatal(err)
	}
	// A second exec, never cancelled, floods stdin until its Send blocks
	// on the full window, holding the send lock.
	other, err := s.exec(context.Background(), &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"sleep", "600"}}}})
	if err != nil {
		t.Fatal(err)
	}
	flood := make(chan error, 1)
	sent := make(chan struct{}, 1)
	go func() {
		frame := bytes.Repeat([]byte("x"), 32<<10)
		for {
			if err := other.Stdin(frame); err != nil {
				flood <- err
				return
			}
			select {
			case sent <- struct{}{}:
			default:
			}
		}
	}()
	<-sent
	cancel()
	r := terminal(t, h)
	if r.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR {
		t.Fatalf("cancelled exec on a stuck stream must end with IO_ERROR, got %v", r)
	}
	if r := terminal(t, other); r.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR {
		t.Fatalf("every handle of a torn-down session ends with IO_ERROR, got %v", r)
	}
	select {
	case err := <-flood:
		if err == nil {
			t.Fatal("flooding Stdin must fail once the session is torn down")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a Stdin send stayed blocked")
	}
	select {
	case err := <-ran:
		if !errors.Is(err, errSendStalled) {
			t.Fatalf("run ended with %v, want errSendStalled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("session run did not end")
	}
	if _, err := s.exec(context.Background(), &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"true"}}}}); !errors.Is(err, ErrNoSession) {
		t.Fatalf("exec on a torn-down session: %v, want ErrNoSession", err)
	}
}

// Close on a handle nobody reads ends its pump (Responses closes) and
// SIGKILLs the running command.
func TestExecHandleCloseStopsPumpAndKills(t *testing.T) {
	f := &wedgedClawkerd{}
	s, _ := startSession(t, f, sendStallTimeout)
	h, err := s.exec(context.Background(), &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"yes"}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Let output queue up unread, then walk away.
	waitFor(t, "output queued", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.queue) > 1
	})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-h.Responses():
		case <-deadline:
			t.Fatal("Responses not closed after Close")
		}
	}
	waitFor(t, "SIGKILL sent", func() bool {
		sig := f.signalled()
		return len(sig) == 1 && sig[0] == int32(syscall.SIGKILL)
	})
	select {
	case <-h.finished:
	case <-time.After(30 * time.Second):
		t.Fatal("handle not finished after the kill's reply")
	}
	_ = h.Close() // idempotent
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// With no RegisterDone, register gives up at its deadline and tears the
// stream down rather than holding the Session forever.
func TestRegisterWaitIsBounded(t *testing.T) {
	s := openSession(t, &wedgedClawkerd{}, sendStallTimeout)
	got := make(chan error, 1)
	go func() {
		_, _, err := (&Dialer{}).register(context.Background(), s.stream, s.teardown, "register", 100*time.Millisecond, "c1", peerIdentity{})
		got <- err
	}()
	select {
	case err := <-got:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("register: %v, want DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("register waited past its deadline")
	}
}

// A peer that takes the SIGKILL of a cancelled exec but never answers
// cannot hold the handle: it fails locally after killGrace.
func TestCancelUnansweredKillFailsHandle(t *testing.T) {
	f := &wedgedClawkerd{ignoreSignals: true}
	s, _ := startSession(t, f, sendStallTimeout)
	s.killGrace = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	h, err := s.exec(ctx, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"sleep", "600"}}}})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	r := terminal(t, h)
	if r.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR || r.GetError().GetMessage() != "no reply to SIGKILL" {
		t.Fatalf("want local IO_ERROR after the kill grace, got %v", r)
	}
	waitFor(t, "the peer to receive the SIGKILL", func() bool {
		sig := f.signalled()
		return len(sig) == 1 && sig[0] == int32(syscall.SIGKILL)
	})
	s.mu.Lock()
	n := len(s.handles)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("abandoned handle still registered (%d handles)", n)
	}
}
