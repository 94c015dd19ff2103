package agent

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
)

// fakeClawkerd is a scriptable ClawkerdService. Shell commands are
// recognised by the executor's command ids ("init/<step>/<n>").
type fakeClawkerd struct {
	clawkerdv1.UnimplementedClawkerdServiceServer

	initialized, cmdRunning bool
	noShell                 bool
	registerOK              bool
	onRegister              func()
	// registerFailFirst answers the first n RegisterRequired with this
	// failure text before answering per registerOK.
	registerFailFirst []string
	failStep          map[string]int32
	errStep           map[string]clawkerdv1.ErrorCode
	// closeAfterInit ends the stream right after AgentReady's Done.
	closeAfterInit bool
	// probeGate, when set, is called before answering the user probe.
	probeGate func()

	sessions atomic.Int64
	live     atomic.Int64
	mu       sync.Mutex
	tags     []string
	shells   map[string]*clawkerdv1.ShellCommand

	addr string
	leaf *auth.Leaf
}

func (f *fakeClawkerd) record(tag string) {
	f.mu.Lock()
	f.tags = append(f.tags, tag)
	f.mu.Unlock()
}

func (f *fakeClawkerd) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tags...)
}

func (f *fakeClawkerd) saw(tag string) bool {
	for _, s := range f.seen() {
		if s == tag {
			return true
		}
	}
	return false
}

func (f *fakeClawkerd) shell(tag string) *clawkerdv1.ShellCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shells[tag]
}

func tagOf(id string) string {
	parts := strings.Split(id, "/")
	if len(parts) == 3 && parts[0] == "init" {
		return parts[1]
	}
	return parts[0]
}

func (f *fakeClawkerd) Session(stream clawkerdv1.ClawkerdService_SessionServer) error {
	f.sessions.Add(1)
	f.live.Add(1)
	defer f.live.Add(-1)
	reply := func(id string, r *clawkerdv1.Response) error {
		r.CommandId = id
		return stream.Send(r)
	}
	done := func(id string, code int32) error {
		return reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_Done{Done: &clawkerdv1.Done{FinalExitCode: code}}})
	}
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return nil
		}
		id := cmd.GetCommandId()
		switch p := cmd.GetPayload().(type) {
		case *clawkerdv1.Command_Hello:
			f.record("hello")
			err = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_HelloAck{
				HelloAck: &clawkerdv1.HelloAck{Initialized: f.initialized, CmdRunning: f.cmdRunning}}})
		case *clawkerdv1.Command_RegisterRequired:
			f.record("register")
			if f.onRegister != nil {
				f.onRegister()
			}
			rd := &clawkerdv1.RegisterDone{Ok: f.registerOK}
			if !f.registerOK {
				rd.Error = "token exchange refused"
			}
			f.mu.Lock()
			if len(f.registerFailFirst) > 0 {
				rd = &clawkerdv1.RegisterDone{Error: f.registerFailFirst[0]}
				f.registerFailFirst = f.registerFailFirst[1:]
			}
			f.mu.Unlock()
			err = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_RegisterDone{RegisterDone: rd}})
		case *clawkerdv1.Command_AgentInitialized:
			f.record("agent-initialized")
			err = done(id, 0)
		case *clawkerdv1.Command_AgentReady:
			f.record("agent-ready-cmd")
			err = done(id, 0)
			if f.closeAfterInit {
				return nil
			}
		case *clawkerdv1.Command_Signal:
			f.record(fmt.Sprintf("signal:%d", p.Signal.GetSigno()))
		case *clawkerdv1.Command_Shell:
			tag := tagOf(id)
			f.record(tag)
			f.mu.Lock()
			if f.shells == nil {
				f.shells = map[string]*clawkerdv1.ShellCommand{}
			}
			f.shells[tag] = p.Shell
			f.mu.Unlock()
			if tag == "probe-user" && f.probeGate != nil {
				f.probeGate()
			}
			switch {
			case f.noShell:
				err = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_Error{
					Error: &clawkerdv1.Error{Code: clawkerdv1.ErrorCode_ERROR_CODE_SPAWN_FAILED, Message: "exec /bin/sh: no such file"}}})
			case f.errStep[tag] != 0:
				err = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_Error{
					Error: &clawkerdv1.Error{Code: f.errStep[tag], Message: "scripted error"}}})
			case f.failStep[tag] != 0:
				_ = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_Output{
					Output: &clawkerdv1.OutputChunk{Data: []byte("hook says no\n")}}})
				err = done(id, f.failStep[tag])
			case tag == "probe-user":
				_ = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_Output{
					Output: &clawkerdv1.OutputChunk{Data: []byte("1000:1000:/home/dev\n")}}})
				err = done(id, 0)
			case tag == "exec":
				_ = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_Started{Started: &clawkerdv1.Started{}}})
				argv := p.Shell.GetStages()[0].GetArgv()
				_ = reply(id, &clawkerdv1.Response{Payload: &clawkerdv1.Response_Output{
					Output: &clawkerdv1.OutputChunk{Data: []byte(strings.Join(argv, " "))}}})
				err = done(id, 0)
			default:
				err = done(id, 0)
			}
		}
		if err != nil {
			return err
		}
	}
}

// startFake serves f over strict mTLS (client cert must chain to the CA)
// on 127.0.0.1 with leaf as its server cert.
func startFake(t testing.TB, p *dtPKI, f *fakeClawkerd, leaf *auth.Leaf) *fakeClawkerd {
	t.Helper()
	f.leaf = leaf
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.pool,
		MinVersion:   tls.VersionTLS13,
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	clawkerdv1.RegisterClawkerdServiceServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return f
}
