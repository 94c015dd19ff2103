package agent

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/logger"
)

// flooder is a peer without flow control whose every command prints
// unflowedQueueMax plus one chunk and exits 0.
type flooder struct {
	clawkerdv1.UnimplementedClawkerdServiceServer
	windows chan uint32
}

func (f *flooder) Session(stream clawkerdv1.ClawkerdService_SessionServer) error {
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return nil
		}
		if sh := cmd.GetShell(); sh != nil {
			f.windows <- sh.GetOutputWindow()
			chunk := bytes.Repeat([]byte("x"), 1<<20)
			for sent := 0; sent <= unflowedQueueMax; sent += len(chunk) {
				if stream.Send(&clawkerdv1.Response{CommandId: cmd.GetCommandId(), Payload: &clawkerdv1.Response_Output{
					Output: &clawkerdv1.OutputChunk{Data: chunk}}}) != nil {
					return nil
				}
			}
			_ = stream.Send(&clawkerdv1.Response{CommandId: cmd.GetCommandId(), Payload: &clawkerdv1.Response_Done{Done: &clawkerdv1.Done{}}})
		}
	}
}

// Without flow control (a peer that did not announce it) the exec carries
// no window, and a reader that falls unflowedQueueMax behind fails the exec
// with IO_ERROR rather than let the CP buffer without bound.
func TestExecWithoutFlowControlBoundsTheBacklog(t *testing.T) {
	f := &flooder{windows: make(chan uint32, 1)}
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
	s := newSession("c1", stream, cancel, logger.Nop()) // flowControl false: nothing announced
	go func() { _ = s.run() }()

	h, err := s.exec(context.Background(), &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{Argv: []string{"yes"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if w := <-f.windows; w != 0 {
		t.Fatalf("output_window %d sent to a peer without flow control", w)
	}
	// 64 MiB through loopback: allow for -race on a loaded machine.
	select {
	case <-h.finished:
	case <-time.After(2 * time.Minute):
		t.Fatal("handle never ended")
	}
	var last *clawkerdv1.Response
	for r := range h.Responses() {
		last = r
	}
	if last.GetError().GetCode() != clawkerdv1.ErrorCode_ERROR_CODE_IO_ERROR || last.GetDone() != nil {
		t.Fatalf("a reader %d bytes behind must end the exec with IO_ERROR, got %v", unflowedQueueMax, last)
	}
}
