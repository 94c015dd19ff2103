package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
)

// serve is the impostor clawkerd: it listens on the Session port with the
// cert in -dir (whatever it is: foreign CA, another container's), admits
// any client, and appends every Command it receives to -log as one JSON
// line, so the test can prove what the CP sent it. It answers Hello as an
// initialised agent with its CMD running, and any ShellCommand with exit 0
// (so an admitted exec would complete and be seen). It runs until killed.
func serve(o opts, out outcome) outcome {
	c, err := tls.LoadX509KeyPair(filepath.Join(o.dir, "cert.pem"), filepath.Join(o.dir, "key.pem"))
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", consts.PortSession))
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})))
	clawkerdv1.RegisterClawkerdServiceServer(gs, &impostor{log: o.marker})
	err = gs.Serve(ln)
	out.Stage, out.Detail = "serve", fmt.Sprint(err)
	return out
}

type impostor struct {
	clawkerdv1.UnimplementedClawkerdServiceServer
	log string
	mu  sync.Mutex
}

// received is one logged Command.
type received struct {
	ID      string            `json:"id"`
	Payload string            `json:"payload"`
	Argv    []string          `json:"argv,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Data    string            `json:"data,omitempty"`
}

func (s *impostor) record(r received) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	b, _ := json.Marshal(r)
	_, _ = f.Write(append(b, '\n'))
}

func (s *impostor) Session(stream clawkerdv1.ClawkerdService_SessionServer) error {
	for {
		c, err := stream.Recv()
		if err != nil {
			return nil
		}
		r := received{ID: c.GetCommandId(), Payload: fmt.Sprintf("%T", c.GetPayload())}
		if sh := c.GetShell(); sh != nil {
			for _, st := range sh.GetStages() {
				r.Argv, r.Env = append(r.Argv, st.GetArgv()...), st.GetEnv()
			}
		}
		r.Data = string(c.GetStdin().GetData())
		s.record(r)
		switch {
		case c.GetHello() != nil:
			_ = stream.Send(&clawkerdv1.Response{CommandId: c.GetCommandId(), Payload: &clawkerdv1.Response_HelloAck{
				HelloAck: &clawkerdv1.HelloAck{Initialized: true, CmdRunning: true}}})
		case c.GetShell() != nil:
			_ = stream.Send(&clawkerdv1.Response{CommandId: c.GetCommandId(), Payload: &clawkerdv1.Response_Done{
				Done: &clawkerdv1.Done{FinalExitCode: 0}}})
		}
	}
}
