package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
)

// dialerExecer adapts agent.Dialer.Exec to admin.Execer.
type dialerExecer struct{ d *Daemon }

func (e dialerExecer) Exec(ctx context.Context, containerID string, start *adminv1.ExecStart) (admin.ExecStream, error) {
	e.d.mu.Lock()
	dialer := e.d.dialer
	e.d.mu.Unlock()
	if dialer == nil {
		return nil, errors.New("the Session dialer is not running")
	}
	// The admin gate already decided; the Dialer checks trust again on the
	// Session that runs the command, and builds it from that Session's ack.
	// exec --wait rides out a redial instead of failing at once.
	opts := []agent.ExecOption{agent.AllowUntrusted(start.GetAllowUntrusted())}
	if w := start.GetWaitMillis(); w > 0 {
		opts = append(opts, agent.WaitForSession(time.Duration(w)*time.Millisecond))
	}
	h, err := dialer.ExecBuild(ctx, containerID, func(ack *clawkerdv1.HelloAck) (*clawkerdv1.ShellCommand, error) {
		if start.GetAttach() {
			return attachCommand(start, ack)
		}
		// The terminal first: -t against a clawkerd without one is
		// refused whatever else the request lacks.
		cmd, err := execTerminal(start, ack, &clawkerdv1.ShellCommand{TimeoutSeconds: start.GetTimeoutSeconds()})
		if err != nil {
			return nil, err
		}
		stage, err := execStage(start, ack)
		if err != nil {
			return nil, err
		}
		cmd.Stages = []*clawkerdv1.PipeStage{stage}
		return cmd, nil
	}, opts...)
	if err != nil {
		return nil, err
	}
	return &execStream{h: h}, nil
}

// parseUser accepts "", "root", "uid" or "uid:gid": what an older
// clawkerd, which cannot resolve names, is sent (exec_identity.go).
func parseUser(u string) (uint32, uint32, error) {
	if u == "" || u == "root" {
		return 0, 0, nil
	}
	us, gs, hasGID := strings.Cut(u, ":")
	uid, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("exec user %q: give a numeric uid[:gid]", u)
	}
	gid := uid
	if hasGID {
		if gid, err = strconv.ParseUint(gs, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("exec user %q: give a numeric uid[:gid]", u)
		}
	}
	return uint32(uid), uint32(gid), nil
}

// execStream turns the handle's Response channel into output + exit code.
type execStream struct{ h *agent.ExecHandle }

func (s *execStream) Recv() ([]byte, bool, int32, error) {
	for r := range s.h.Responses() {
		switch p := r.GetPayload().(type) {
		case *clawkerdv1.Response_Output:
			return p.Output.GetData(), p.Output.GetStderr(), 0, nil
		case *clawkerdv1.Response_Done:
			return nil, false, p.Done.GetFinalExitCode(), io.EOF
		case *clawkerdv1.Response_Error:
			return nil, false, -1, fmt.Errorf("%s: %s", p.Error.GetCode(), p.Error.GetMessage())
		}
	}
	return nil, false, -1, errors.New("session ended before the command finished")
}

func (s *execStream) Stdin(data []byte) error  { return s.h.Stdin(data) }
func (s *execStream) CloseStdin() error        { return s.h.CloseStdin() }
func (s *execStream) Signal(signo int32) error { return s.h.Signal(signo) }
func (s *execStream) Resize(rows, cols uint32) error {
	return s.h.Resize(rows, cols)
}

// Close releases the handle: its goroutine ends and a command still
// running is SIGKILLed, whether or not the caller read to the end.
func (s *execStream) Close() error { return s.h.Close() }
