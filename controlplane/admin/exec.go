package admin

import (
	"context"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// Execer runs one command in an agent over its Session. The daemon adapts
// the agent Dialer to it.
type Execer interface {
	Exec(ctx context.Context, containerID string, start *adminv1.ExecStart) (ExecStream, error)
}

// ExecStream is one running command: output chunks until the exit code.
type ExecStream interface {
	// Recv returns the next output chunk; at the end it returns
	// (nil, exitCode, io.EOF).
	Recv() (data []byte, exitCode int32, err error)
	Stdin(data []byte) error
	CloseStdin() error
	Signal(signo int32) error
	Close() error
}

// Exec streams a command's output and exit code. The first request must
// carry start; later ones carry stdin, close_stdin or signal. Audited with
// who, what and when.
func (s *Server) Exec(stream adminv1.AdminService_ExecServer) error {
	if s.d.Exec == nil {
		return status.Error(codes.Unavailable, "exec unavailable: no Session dialer in this control plane")
	}
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil || len(start.GetArgv()) == 0 {
		return status.Error(codes.InvalidArgument, "exec: the first message must be start with a command")
	}
	ag, err := s.resolve(start.GetAgent())
	if err != nil {
		return err
	}
	id := ag.GetContainerId()
	s.log.Info().Str("event", "admin_exec").Str("container_id", id).Str("agent", ag.GetAgent()).
		Str("project", ag.GetProject()).Strs("argv", start.GetArgv()).Str("user", start.GetUser()).
		Str("by", callerCN(ctx)).Msg("exec requested")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	es, err := s.d.Exec.Exec(ctx, id, start)
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "exec in %s: %v", ag.GetAgent(), err)
	}
	defer es.Close()
	if err := stream.Send(&adminv1.ExecResponse{Payload: &adminv1.ExecResponse_ContainerId{ContainerId: id}}); err != nil {
		return err
	}
	go s.pumpExecInput(stream, es, cancel)
	for {
		data, code, err := es.Recv()
		if err == io.EOF {
			s.log.Info().Str("event", "admin_exec_done").Str("container_id", id).Int32("exit_code", code).Msg("exec finished")
			return stream.Send(&adminv1.ExecResponse{Payload: &adminv1.ExecResponse_ExitCode{ExitCode: code}})
		}
		if err != nil {
			return status.Errorf(codes.Aborted, "exec in %s: %v", ag.GetAgent(), err)
		}
		if len(data) > 0 {
			if err := stream.Send(&adminv1.ExecResponse{Payload: &adminv1.ExecResponse_Output{Output: data}}); err != nil {
				return err
			}
		}
	}
}

func (s *Server) pumpExecInput(stream adminv1.AdminService_ExecServer, es ExecStream, cancel context.CancelFunc) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Str("event", "admin_exec_input_panic").Interface("panic", r).Msg("recovered")
			cancel()
		}
	}()
	for {
		req, err := stream.Recv()
		if err != nil {
			return // client closed its side; the command keeps its stdin state
		}
		switch p := req.GetPayload().(type) {
		case *adminv1.ExecRequest_Stdin:
			err = es.Stdin(p.Stdin)
		case *adminv1.ExecRequest_CloseStdin:
			err = es.CloseStdin()
		case *adminv1.ExecRequest_Signal:
			err = es.Signal(p.Signal)
		}
		if err != nil {
			s.log.Warn().Str("event", "admin_exec_input_failed").Err(err).Msg("forwarding exec input failed")
		}
	}
}
