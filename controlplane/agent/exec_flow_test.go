package agent

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/logger"
)

// A consumer far slower than the command, through Dialer.Exec and the real
// clawkerd: clawkerd holds the writer back instead of the CP dropping
// output, so every byte arrives in order with the right exit code, and the
// handle never holds more than the window.
func TestExecSlowConsumerGetsEveryByte(t *testing.T) {
	const lines = 2_500_000 // ~19 MiB: several windows
	var want bytes.Buffer
	for i := 1; i <= lines; i++ {
		want.WriteString(strconv.Itoa(i))
		want.WriteByte('\n')
	}
	env := newDTEnv(t, nil)
	id := dtContainerID(t)
	startRealClawkerd(t, env, id)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})

	cmd := &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{
		Argv: []string{"/bin/sh", "-c", "seq 1 " + strconv.Itoa(lines) + "; exit 7"}}}}
	h, err := env.dialer.Exec(context.Background(), id, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.GetOutputWindow() != 0 {
		t.Fatal("Exec modified the caller's ShellCommand")
	}
	queuedBytes := func() (q, inflight int) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, r := range h.queue {
			q += len(r.GetOutput().GetData())
		}
		return q, h.inflight
	}
	// Read nothing until a full window sits in the handle: the command is
	// then blocked by clawkerd, not racing ahead into CP memory.
	dtWait(t, "a full window queued", func() bool { q, _ := queuedBytes(); return q >= ExecOutputWindow })
	// Another exec on the same Session still runs meanwhile.
	h2, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"/bin/sh", "-c", "echo bystander"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if out, done, exErr := drain(t, h2); out != "bystander\n" || done == nil || exErr != nil {
		t.Fatalf("second exec while the first is stalled: %q %v %v", out, done, exErr)
	}
	if q, inflight := queuedBytes(); q > ExecOutputWindow || inflight > ExecOutputWindow {
		t.Fatalf("handle holds %d bytes (%d in flight), window %d", q, inflight, ExecOutputWindow)
	}

	var got bytes.Buffer
	code := int32(-100)
	n := 0
	for r := range h.Responses() {
		got.Write(r.GetOutput().GetData())
		if d := r.GetDone(); d != nil {
			code = d.GetFinalExitCode()
		}
		if e := r.GetError(); e != nil {
			t.Fatalf("exec error: %v", e)
		}
		if n++; n%64 == 0 {
			if q, inflight := queuedBytes(); q > ExecOutputWindow || inflight > ExecOutputWindow {
				t.Fatalf("handle holds %d bytes (%d in flight), window %d", q, inflight, ExecOutputWindow)
			}
		}
	}
	if code != 7 {
		t.Fatalf("exit code %d, want 7", code)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("output differs: got %d bytes, want %d", got.Len(), want.Len())
	}
}

// windowIgnorer is a clawkerd that sends more output than the window it
// was given and never reads credit.
type windowIgnorer struct {
	clawkerdv1.UnimplementedClawkerdServiceServer
	mu      sync.Mutex
	signals []int32
}

func (f *windowIgnorer) Session(stream clawkerdv1.ClawkerdService_SessionServer) error {
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return nil
		}
		id := cmd.GetCommandId()
		switch p := cmd.GetPayload().(type) {
		case *clawkerdv1.Command_Shell:
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for sent := 0; sent <= int(p.Shell.GetOutputWindow()); sent += len(chunk) {
				_ = stream.Send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Output{
					Output: &clawkerdv1.OutputChunk{Data: chunk}}})
			}
			_ = stream.Send(&clawkerdv1.Response{CommandId: id, Payload: &clawkerdv1.Response_Done{Done: &clawkerdv1.Done{}}})
		case *clawkerdv1.Command_Signal:
			f.mu.Lock()
			f.signals = append(f.signals, p.Signal.GetSigno())
			f.mu.Unlock()
		}
	}
}

// A peer that ignores the window must not make the CP buffer without
// bound nor drop silently: the exec ends with IO_ERROR (never Done) and
// the command is killed.
func TestExecWindowViolationFailsExec(t *testing.T) {
	f := &windowIgnorer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
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
	s.flowControl = true // the peer announced flow-control/v1, then ignores it
	go func() { _ = s.run() }()

	h, err := s.exec(context.Background(), &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"true"}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Read nothing until the handle ended: a violation must not depend on
	// the consumer being slow or fast.
	dtWait(t, "handle failed", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.done
	})
	var last *clawkerdv1.Response
	total := 0
	for r := range h.Responses() {
		total += len(r.GetOutput().GetData())
		last = r
	}
	if last.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR || last.GetDone() != nil {
		t.Fatalf("window violation must end the exec with IO_ERROR, got %v", last)
	}
	if total > ExecOutputWindow {
		t.Fatalf("handle delivered %d bytes beyond the %d window", total, ExecOutputWindow)
	}
	dtWait(t, "violating command killed", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.signals) > 0 && f.signals[0] == int32(syscall.SIGKILL)
	})
}
