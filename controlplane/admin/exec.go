package admin

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
)

// Execer runs one command in an agent over its Session. The daemon adapts
// the agent Dialer to it.
type Execer interface {
	Exec(ctx context.Context, containerID string, start *adminv1.ExecStart) (ExecStream, error)
}

// ExecStream is one running command: output chunks until the exit code.
type ExecStream interface {
	// Recv returns the next output chunk (stderr when the command was
	// started with separate_stderr and the chunk is stderr); at the end it
	// returns (nil, false, exitCode, io.EOF).
	Recv() (data []byte, stderr bool, exitCode int32, err error)
	Stdin(data []byte) error
	CloseStdin() error
	Signal(signo int32) error
	// Resize sets a tty command's terminal size (exec -t).
	Resize(rows, cols uint32) error
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
	if start == nil || (len(start.GetArgv()) == 0) != start.GetAttach() {
		return status.Error(codes.InvalidArgument, "exec: the first message must be start with a command (or, to attach, none)")
	}
	ag, err := s.resolve(start.GetAgent())
	if err != nil {
		return err
	}
	ag = s.awaitTrusted(ctx, start, ag) // exec --wait
	id := ag.GetContainerId()
	trust, err := s.gateExec(ctx, ag, start)
	if err != nil {
		return err
	}
	s.log.Info().Str("event", "admin_exec").Str("container_id", id).Str("agent", ag.GetAgent()).
		Str("project", ag.GetProject()).Strs("argv", start.GetArgv()).Str("user", start.GetUser()).Bool("tty", start.GetTty()).Bool("attach", start.GetAttach()).
		Str("trusted", trust).Bool("allow_untrusted", start.GetAllowUntrusted()).
		Str("by", callerCN(ctx)).Msg("exec requested")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	es, err := s.d.Exec.Exec(ctx, id, start)
	if errors.Is(err, agent.ErrSessionUntrusted) {
		// The Dialer refused: the Session failed its cert pin (observation
		// only, whatever the caller allowed), or it is not trusted and the
		// caller did not allow that (a Session replaced after the gate).
		s.log.Warn().Str("event", "admin_exec_refused").Str("container_id", id).Str("trusted", trust).
			Str("by", callerCN(ctx)).Err(err).Msg("exec refused by the dialer: session not trusted")
		why := adminv1.UntrustedBecause(ag)
		if why == "" { // the worldview has not caught up with the Dialer
			why = string(overseer.ReasonContainerMismatch)
		}
		return untrustedError(ag, why)
	}
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "exec in %s: %v", ag.GetAgent(), err)
	}
	defer es.Close()
	if err := stream.Send(&adminv1.ExecResponse{Payload: &adminv1.ExecResponse_ContainerId{ContainerId: id}}); err != nil {
		return err
	}
	go s.pumpExecInput(stream, es, cancel)
	for {
		data, isErr, code, err := es.Recv()
		if err == io.EOF {
			s.log.Info().Str("event", "admin_exec_done").Str("container_id", id).Int32("exit_code", code).Msg("exec finished")
			return stream.Send(&adminv1.ExecResponse{Payload: &adminv1.ExecResponse_ExitCode{ExitCode: code}})
		}
		if err != nil {
			return status.Errorf(codes.Aborted, "exec in %s: %v", ag.GetAgent(), err)
		}
		if len(data) > 0 {
			res := &adminv1.ExecResponse{Payload: &adminv1.ExecResponse_Output{Output: data}}
			if isErr {
				res.Payload = &adminv1.ExecResponse_Stderr{Stderr: data}
			}
			if err := stream.Send(res); err != nil {
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
		case *adminv1.ExecRequest_Resize:
			err = es.Resize(p.Resize.GetRows(), p.Resize.GetCols())
		}
		if err != nil {
			s.log.Warn().Str("event", "admin_exec_input_failed").Err(err).Msg("forwarding exec input failed")
		}
	}
}
