// Command attacker is the hostile peer of the e2e hostile-peer matrix
// (test/e2e/hostile_test.go). The suite builds it statically, copies it
// into real containers on clawker-net (a stranger container and real agent
// containers) and runs one attack per invocation. It is deliberately dumb:
// the test decides the key material (files under -dir) and the expected
// refusal; this binary only carries the attempt and prints one JSON
// outcome line on stdout, whatever happens.
//
// Modes:
//
//	register  AgentService.Register over mTLS (optionally after fetching a
//	          token at -token-url with the assertion in -dir)
//	raw       a malformed protobuf body sent as Register
//	token     the token endpoint (RFC 6749 client_credentials + RFC 7523)
//	session   clawkerd's Session: Hello, then a ShellCommand touching -marker
//	serve     an impostor clawkerd on :7700 with the cert in -dir, logging
//	          every Command it receives to -marker (serve.go)
//
// Material in -dir, each optional: cert.pem + key.pem (client cert),
// token (bearer), assertion (client assertion JWT).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv/hostile"
)

// outcome is the one JSON line the test parses (its stages: hostile.Outcome).
type outcome = hostile.Outcome

type opts struct {
	name, mode, target, dir, tokenURL string
	agent, project, scope, marker     string
	trigger                           string
	pad                               int
}

func main() {
	var o opts
	flag.StringVar(&o.name, "name", "", "attack name (echoed in the outcome)")
	flag.StringVar(&o.mode, "mode", "", "register | raw | token | session | tcp")
	flag.StringVar(&o.target, "target", "", "host:port (register, raw, session) or token URL (token)")
	flag.StringVar(&o.dir, "dir", ".", "material directory")
	flag.StringVar(&o.tokenURL, "token-url", "", "register: fetch a bearer here first when -dir has no token")
	flag.StringVar(&o.agent, "agent", "", "RegisterRequest.agent_name")
	flag.StringVar(&o.project, "project", "", "RegisterRequest.project")
	flag.StringVar(&o.scope, "scope", consts.ScopeRegister, "token: requested scope")
	flag.StringVar(&o.marker, "marker", "/tmp/hostile-marker", "session: file the ShellCommand would create")
	flag.IntVar(&o.pad, "pad", 0, "register: bytes appended to agent_name (oversized message)")
	flag.StringVar(&o.trigger, "trigger", "", "listen here and attack after the first connection (lets a test start it when its pod's IP is known)")
	flag.Parse()
	if o.trigger != "" {
		awaitTrigger(o.trigger)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := outcome{Attack: o.name, Mode: o.mode}
	switch o.mode {
	case "register", "raw":
		out = register(ctx, o, out)
	case "token":
		out = fetchToken(ctx, o, o.target, out)
	case "session":
		out = session(ctx, o, out)
	case "serve":
		out = serve(o, out)
	case "flood", "get", "idle", "replay":
		out = dos(ctx, o, out)
	case "tcp":
		out = tcpConnect(ctx, o, out)
	default:
		out.Stage, out.Detail = "usage", "unknown mode "+o.mode
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

// awaitTrigger blocks until one connection to addr arrives (or 2 min).
func awaitTrigger(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return
	}
	defer l.Close()
	_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
	if c, err := l.Accept(); err == nil {
		c.Close()
	}
}

// tlsConfig presents the client cert in dir, if any. The attacker does not
// care who the server is, so it does not verify it.
func tlsConfig(dir string) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // an attacker, on purpose
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := os.Stat(certPath); err == nil {
		c, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, err
		}
		// Present it whatever CAs the server asks for: crypto/tls would
		// otherwise withhold a cert that does not chain to them, and a real
		// attacker sends it anyway.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg, nil
}

func readOpt(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func rpcOutcome(out outcome, err error) outcome {
	if err == nil {
		out.OK, out.Stage = true, "rpc"
		return out
	}
	st := status.Convert(err)
	out.Code, out.Message = st.Code().String(), st.Message()
	out.Stage = "rpc"
	// Unavailable means no server application code answered: the TLS
	// handshake or the connection was refused.
	if st.Code().String() == "Unavailable" {
		out.Stage = "transport"
	}
	return out
}

func register(ctx context.Context, o opts, out outcome) outcome {
	cfg, err := tlsConfig(o.dir)
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	tok := readOpt(o.dir, "token")
	if tok == "" && o.tokenURL != "" {
		got := fetchToken(ctx, o, o.tokenURL, outcome{})
		if !got.OK {
			got.Attack, got.Mode, got.Stage = o.name, o.mode, "token"
			return got
		}
		tok = got.Token
	}
	conn, err := grpc.NewClient(o.target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	defer conn.Close()
	if tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	if o.mode == "raw" {
		// A field tag with wire type 7 (invalid) followed by an unterminated
		// varint: no protobuf decoder accepts it.
		var reply []byte
		err = conn.Invoke(ctx, consts.RegisterMethod, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, &reply, grpc.ForceCodecV2(rawCodec{}))
		return rpcOutcome(out, err)
	}
	name := o.agent
	if o.pad > 0 {
		name += strings.Repeat("a", o.pad)
	}
	_, err = agentv1.NewAgentServiceClient(conn).Register(ctx, &agentv1.RegisterRequest{AgentName: name, Project: o.project})
	return rpcOutcome(out, err)
}

func fetchToken(ctx context.Context, o opts, tokenURL string, out outcome) outcome {
	cfg, err := tlsConfig(o.dir)
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"scope":                 {o.scope},
	}
	if a := readOpt(o.dir, "assertion"); a != "" {
		form.Set("client_assertion", a)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := client.Do(req)
	if err != nil {
		out.Stage, out.Detail = "transport", err.Error()
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	out.Stage, out.HTTPStatus, out.Body = "http", resp.StatusCode, strings.TrimSpace(string(body))
	if resp.StatusCode == http.StatusOK {
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(body, &tr) == nil && tr.AccessToken != "" {
			out.OK, out.Token = true, tr.AccessToken
		}
	}
	return out
}

func session(ctx context.Context, o opts, out outcome) outcome {
	cfg, err := tlsConfig(o.dir)
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	conn, err := grpc.NewClient(o.target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	defer conn.Close()
	stream, err := clawkerdv1.NewClawkerdServiceClient(conn).Session(ctx)
	if err != nil {
		return rpcOutcome(out, err)
	}
	send := func(c *clawkerdv1.Command) error {
		if err := stream.Send(c); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	}
	_ = send(&clawkerdv1.Command{CommandId: "h", Payload: &clawkerdv1.Command_Hello{Hello: &clawkerdv1.Hello{}}})
	_ = send(&clawkerdv1.Command{CommandId: "x", Payload: &clawkerdv1.Command_Shell{Shell: &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"touch", o.marker}}},
	}}})
	// Any reply means the listener accepted this peer; read on until the
	// ShellCommand ends so it is not killed by our hang-up.
	var got []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			if len(got) == 0 {
				return rpcOutcome(out, err)
			}
			break
		}
		got = append(got, fmt.Sprintf("%T", resp.GetPayload()))
		if resp.GetCommandId() == "x" && (resp.GetDone() != nil || resp.GetError() != nil) {
			break
		}
	}
	out.OK, out.Stage, out.Detail = true, "rpc", strings.Join(got, " ")
	return out
}

// rawCodec sends the bytes it is given as the message, unvalidated.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T", v)
	}
	return mem.BufferSlice{mem.NewBuffer(&b, nil)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if p, ok := v.(*[]byte); ok {
		*p = data.Materialize()
	}
	return nil
}

func (rawCodec) Name() string { return "proto" }
