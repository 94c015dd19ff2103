package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/admin"
)

// endExec is a remote command that prints a line and then ends: with
// exit code (the attach's own Done), or with a lost Session (err).
type endExec struct {
	code int32
	err  error
}

func (e *endExec) Exec(context.Context, string, *adminv1.ExecStart) (admin.ExecStream, error) {
	return &endStream{e: e}, nil
}

type endStream struct {
	e       *endExec
	printed bool
}

func (s *endStream) Recv() ([]byte, bool, int32, error) {
	if !s.printed {
		s.printed = true
		return []byte("bye\r\n"), false, 0, nil
	}
	if s.e.err != nil {
		return nil, false, -1, s.e.err
	}
	return nil, false, s.e.code, io.EOF
}
func (*endStream) Stdin([]byte) error          { return nil }
func (*endStream) CloseStdin() error           { return nil }
func (*endStream) Signal(int32) error          { return nil }
func (*endStream) Resize(uint32, uint32) error { return nil }
func (*endStream) Close() error                { return nil }

// blockedReader is a stdin nobody types into: Read never returns.
type blockedReader struct{ release chan struct{} }

func (r blockedReader) Read([]byte) (int, error) { <-r.release; return 0, io.EOF }

// waitDocker answers ContainerWait with the container's exit code.
type waitDocker struct {
	*fakeDocker
	code   int64
	waited chan string
}

func (d *waitDocker) ContainerWait(_ context.Context, id string, _ mobyclient.ContainerWaitOptions) mobyclient.ContainerWaitResult {
	d.waited <- id
	res, errc := make(chan container.WaitResponse, 1), make(chan error, 1)
	res <- container.WaitResponse{StatusCode: d.code}
	return mobyclient.ContainerWaitResult{Result: res, Error: errc}
}

// TestAttachEndsWithTheCommandsExitCode: when the user CMD exits, attach
// exits with its code, as docker attach does, whether the code comes in
// the attach's own reply or, the Session having ended first, from the
// container. Neither waits on stdin, which nobody types into.
func TestAttachEndsWithTheCommandsExitCode(t *testing.T) {
	const id = "cafe0123456789abcafe0123456789abcafe0123456789abcafe0123456789ab"
	for _, tc := range []struct {
		name     string
		ex       *endExec
		fromWait bool
	}{
		{"the attach's Done", &endExec{code: 7}, false},
		{"the Session ended first", &endExec{err: errors.New("session ended before the command finished")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := initHome(t)
			t.Setenv(EnvCPAdminAddr, serveAdminTrust(t, home, id, tc.ex, false))
			in := blockedReader{release: make(chan struct{})}
			defer close(in.release)
			d := &waitDocker{fakeDocker: &fakeDocker{}, code: 7, waited: make(chan string, 1)}
			var out, errb bytes.Buffer
			a := &app{in: in, out: &out, errOut: &errb, now: time.Now,
				newDocker: func() (dockerAPI, error) { return d, nil }}
			done := make(chan int, 1)
			go func() { done <- a.run(context.Background(), []string{"--home", home, "attach", "-p", "web", "dev"}) }()
			select {
			case code := <-done:
				if code != 7 || !strings.Contains(out.String(), "bye") {
					t.Fatalf("attach: exit %d, want 7; stdout %q stderr %q", code, out.String(), errb.String())
				}
				if strings.Contains(errb.String(), "detached") {
					t.Fatalf("the command's exit is no detach: %q", errb.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatal("attach did not end after the command exited")
			}
			select {
			case got := <-d.waited:
				if !tc.fromWait || got != id {
					t.Fatalf("waited on %q; the attach's own exit code needs no wait", got)
				}
			default:
				if tc.fromWait {
					t.Fatal("a lost Session must take the code from the container")
				}
			}
		})
	}
}

// refuseExec is the CP's answer for an agent whose clawkerd has no
// terminals (an older clawkerd): Exec fails before anything runs.
type refuseExec struct{ why string }

func (e refuseExec) Exec(context.Context, string, *adminv1.ExecStart) (admin.ExecStream, error) {
	return nil, errors.New(e.why)
}

// TestTerminalRefusedByAnOldClawkerd: attach and exec -t to an agent whose
// clawkerd cannot give terminals fail at once with the CP's reason and
// what to do, without waiting on the container.
func TestTerminalRefusedByAnOldClawkerd(t *testing.T) {
	for _, tc := range []struct {
		args []string
		why  string
	}{
		{[]string{"attach", "-p", "web", "dev"}, "this agent's clawkerd cannot attach to its command's terminal (recreate the agent to update it)"},
		{[]string{"exec", "-t", "-p", "web", "dev", "--", "sh"}, "this agent's clawkerd cannot give a command a terminal (recreate the agent to update it): run without -t"},
	} {
		home := initHome(t)
		t.Setenv(EnvCPAdminAddr, serveAdminTrust(t, home, strings.Repeat("cd", 32), refuseExec{why: tc.why}, false))
		in := blockedReader{release: make(chan struct{})}
		t.Cleanup(func() { close(in.release) })
		var out, errb bytes.Buffer
		a := &app{in: in, out: &out, errOut: &errb, now: time.Now,
			newDocker: func() (dockerAPI, error) { return nil, errors.New("no docker needed") }}
		code := a.run(context.Background(), append([]string{"--home", home}, tc.args...))
		if code != ExitError || !strings.Contains(errb.String(), tc.why) {
			t.Fatalf("%v: exit %d, stderr %q; want 1 and %q", tc.args, code, errb.String(), tc.why)
		}
	}
}
