package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

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
	uid, gid, err := parseUser(start.GetUser())
	if err != nil {
		return nil, err
	}
	h, err := dialer.Exec(ctx, containerID, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{
			Argv: start.GetArgv(), Uid: uid, Gid: gid, Cwd: start.GetCwd(), Env: start.GetEnv(),
		}},
		TimeoutSeconds: start.GetTimeoutSeconds(),
	})
	if err != nil {
		return nil, err
	}
	return &execStream{h: h}, nil
}

// parseUser accepts "", "root", "uid" or "uid:gid". Names other than root
// would need the container's passwd; clawkerd resolves CLAWKER_USER for
// the user CMD, exec takes numbers.
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

func (s *execStream) Recv() ([]byte, int32, error) {
	for r := range s.h.Responses() {
		switch p := r.GetPayload().(type) {
		case *clawkerdv1.Response_Output:
			return p.Output.GetData(), 0, nil
		case *clawkerdv1.Response_Done:
			return nil, p.Done.GetFinalExitCode(), io.EOF
		case *clawkerdv1.Response_Error:
			return nil, -1, fmt.Errorf("%s: %s", p.Error.GetCode(), p.Error.GetMessage())
		}
	}
	return nil, -1, errors.New("session ended before the command finished")
}

func (s *execStream) Stdin(data []byte) error  { return s.h.Stdin(data) }
func (s *execStream) CloseStdin() error        { return s.h.CloseStdin() }
func (s *execStream) Signal(signo int32) error { return s.h.Signal(signo) }

// Close releases the handle: its goroutine ends and a command still
// running is SIGKILLed, whether or not the caller read to the end.
func (s *execStream) Close() error { return s.h.Close() }
