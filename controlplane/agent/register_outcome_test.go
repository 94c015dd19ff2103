package agent

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/logger"
)

// registerBreaker is a ClawkerdService that answers Hello (not
// initialized, so the CP must Register) and then, on RegisterRequired,
// either breaks the stream (hang=false) or never answers (hang=true).
type registerBreaker struct {
	clawkerdv1.UnimplementedClawkerdServiceServer
	hang bool
}

func (f *registerBreaker) Session(stream clawkerdv1.ClawkerdService_SessionServer) error {
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return nil
		}
		switch cmd.GetPayload().(type) {
		case *clawkerdv1.Command_Hello:
			if err := stream.Send(&clawkerdv1.Response{CommandId: cmd.GetCommandId(), Payload: &clawkerdv1.Response_HelloAck{
				HelloAck: &clawkerdv1.HelloAck{}}}); err != nil {
				return err
			}
		case *clawkerdv1.Command_RegisterRequired:
			if f.hang {
				<-stream.Context().Done()
				return nil
			}
			return status.Error(codes.Unavailable, "connection reset mid-register")
		}
	}
}

// serveClawkerd serves srv for id over the same strict mTLS as startFake
// and points id's dial target at it.
func serveClawkerd(t *testing.T, env *dtEnv, id string, srv clawkerdv1.ClawkerdServiceServer) {
	t.Helper()
	leaf := env.pki.agentLeaf(t, "proj", "dev", id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: env.pki.pool, MinVersion: tls.VersionTLS13,
	})))
	clawkerdv1.RegisterClawkerdServiceServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	env.targets.set(id, DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"})
}

// registerOutcome waits for the Register outcome of id and returns it.
func registerOutcome(t *testing.T, env *dtEnv, id string) (AgentRegistered, []overseer.UntrustedReason) {
	t.Helper()
	r := env.rec.wait(t, id, EventAgentRegistered).(AgentRegistered)
	env.rec.wait(t, id, EventAgentUntrusted)
	return r, untrustedReasons(env, id)
}

// A Register whose Session breaks, or that never gets its RegisterDone,
// used to end the Session silently. It now publishes
// AgentRegistered{Ok:false} and AgentUntrusted with a network/CP-side
// reason, and the worldview shows the agent untrusted.
func TestRegisterTransportAndTimeoutArePublished(t *testing.T) {
	for _, tc := range []struct {
		name string
		hang bool
		want overseer.UntrustedReason
	}{
		{"transport", false, overseer.ReasonRegisterTransport},
		{"timeout", true, overseer.ReasonRegisterTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newDTEnv(t, nil, withRegisterTimeout(150*time.Millisecond))
			id := dtContainerID(t)
			serveClawkerd(t, env, id, &registerBreaker{hang: tc.hang})
			env.dialer.DialAgent(context.Background(), id)
			r, reasons := registerOutcome(t, env, id)
			if r.Ok || r.Reason == "" {
				t.Fatalf("AgentRegistered %+v, want Ok=false with a reason", r)
			}
			if len(reasons) != 1 || reasons[0] != tc.want {
				t.Fatalf("untrusted reasons %v, want [%s]", reasons, tc.want)
			}
			names := env.rec.names(id)
			if names[2] != EventAgentRegistered || names[3] != EventAgentUntrusted {
				t.Fatalf("want AgentRegistered, AgentUntrusted after SessionConnected: %v", names)
			}
			if a, _ := env.bus.Agent(id); a.Trusted || a.Registered || len(a.UntrustedReasons) != 1 {
				t.Fatalf("worldview %+v", a)
			}
		})
	}
}

// tokenEndpoint is a CP token endpoint stand-in on loopback with the CP
// cert: it answers every exchange with code (after release is closed
// when hang is set).
type tokenEndpoint struct {
	url     string
	hits    atomic.Int64
	release chan struct{}
	once    sync.Once
}

func (te *tokenEndpoint) unblock() { te.once.Do(func() { close(te.release) }) }

func startTokenEndpoint(t *testing.T, env *dtEnv, code int, body string, hang bool) *tokenEndpoint {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(env.pki.certPath, env.pki.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	te := &tokenEndpoint{release: make(chan struct{})}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: env.pki.pool, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		te.hits.Add(1)
		if hang {
			select {
			case <-te.release:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		te.unblock()
		_ = srv.Close()
	})
	te.url = "https://" + ln.Addr().String() + "/token"
	return te
}

// startRealClawkerdUnregistered serves the real clawkerd for id with no
// registry row (so the CP sends RegisterRequired) and its CP endpoints at
// tokenURL / agentAddr.
func startRealClawkerdUnregistered(t *testing.T, env *dtEnv, id, tokenURL, agentAddr string) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh on this host")
	}
	leaf := env.pki.agentLeaf(t, "proj", "dev", id)
	srv, err := clawkerd.NewServer(clawkerd.Config{
		Cert:   tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert},
		CAPool: env.pki.pool, AgentName: "dev", Project: "proj",
		InitMarkerPath: filepath.Join(t.TempDir(), "initialized"), Console: io.Discard,
		CPTokenURL: tokenURL, CPAgentAddr: agentAddr, Assertion: "assertion.jwt.placeholder",
	}, logger.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	env.targets.set(id, DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"})
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// The real clawkerd reports why its Register failed; a CP that is down,
// flooded (5xx) or too slow gets the advisory register_cp_unavailable /
// register_timeout, while the CP's gate refusing the agent
// (invalid_client) stays register_failed, which the policy enforces.
func TestRealClawkerdRegisterFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int    // token endpoint answer; 0: nothing listens
		body string //
		hang bool   // answer only after the test
		want overseer.UntrustedReason
		hits int // token requests: CP-side failures are retried
	}{
		{"token endpoint down", 0, "", false, overseer.ReasonRegisterCPUnavailable, 0},
		{"token endpoint flooded", http.StatusServiceUnavailable, "busy", false, overseer.ReasonRegisterCPUnavailable, registerAttempts},
		{"token endpoint server_error", http.StatusInternalServerError, `{"error":"server_error"}`, false, overseer.ReasonRegisterCPUnavailable, registerAttempts},
		{"token endpoint too slow", http.StatusServiceUnavailable, "", true, overseer.ReasonRegisterTimeout, 1},
		{"gate refuses the agent", http.StatusUnauthorized, `{"error":"invalid_client"}`, false, overseer.ReasonRegisterFailed, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newDTEnv(t, nil, withRegisterTimeout(500*time.Millisecond), withRegisterPause(10*time.Millisecond))
			id := dtContainerID(t)
			url := "https://" + closedAddr(t) + "/token"
			var te *tokenEndpoint
			if tc.code != 0 {
				te = startTokenEndpoint(t, env, tc.code, tc.body, tc.hang)
				url = te.url
			}
			startRealClawkerdUnregistered(t, env, id, url, closedAddr(t))
			if te != nil {
				// Runs first: clawkerd's detached Register must not wait
				// out its 30s budget on the hanging endpoint.
				t.Cleanup(te.unblock)
			}
			env.dialer.DialAgent(context.Background(), id)
			r, reasons := registerOutcome(t, env, id)
			if r.Ok {
				t.Fatalf("AgentRegistered %+v", r)
			}
			if len(reasons) != 1 || reasons[0] != tc.want {
				t.Fatalf("untrusted reasons %v (register reason %q), want [%s]", reasons, r.Reason, tc.want)
			}
			if te != nil && te.hits.Load() != int64(tc.hits) {
				t.Fatalf("token endpoint hit %d times, want %d (only CP-side failures are retried)", te.hits.Load(), tc.hits)
			}
		})
	}
}

func TestRegisterReplyReasonVocabulary(t *testing.T) {
	for in, want := range map[string]overseer.UntrustedReason{
		`token exchange: Post "https://clawker-controlplane:7443/token": dial tcp 172.18.0.2:7443: connect: connection refused`: overseer.ReasonRegisterCPUnavailable,
		`token exchange: oauth2: cannot fetch token: 503 Service Unavailable` + "\nResponse: busy":                              overseer.ReasonRegisterCPUnavailable,
		`token exchange: oauth2: cannot fetch token: 429 Too Many Requests`:                                                     overseer.ReasonRegisterCPUnavailable,
		`register call: rpc error: code = Unavailable desc = connection error`:                                                  overseer.ReasonRegisterCPUnavailable,
		`register call: rpc error: code = ResourceExhausted desc = too many streams`:                                            overseer.ReasonRegisterCPUnavailable,
		`register call: rpc error: code = PermissionDenied desc = registration rejected`:                                        overseer.ReasonRegisterFailed,
		`token exchange: oauth2: "invalid_client"`:                                                                              overseer.ReasonRegisterFailed,
		// A refusal wins even when the text also names a network error.
		`register call: rpc error: code = PermissionDenied desc = connection refused`: overseer.ReasonRegisterFailed,
		"no client assertion configured":                                              overseer.ReasonRegisterFailed,
		// clawkerd's marker for a spent assertion, only at the start.
		clawkerdv1.RegisterAssertionSpent + " recreate the agent: read assertion: no such file": overseer.ReasonRegisterAssertionSpent,
		"read assertion: open /x/assertion.jwt: no such file or directory":                      overseer.ReasonRegisterFailed,
		"token exchange: " + clawkerdv1.RegisterAssertionSpent + " x":                           overseer.ReasonRegisterFailed,
		"anything else the agent says":                                                          overseer.ReasonRegisterFailed,
		"":                                                                                      overseer.ReasonRegisterFailed,
	} {
		if got := registerReplyReason(in); got != want {
			t.Errorf("registerReplyReason(%q) = %s, want %s", in, got, want)
		}
	}
}

// recordingConsumer counts worldview passes and keeps the last snapshot.
type recordingConsumer struct {
	mu     sync.Mutex
	passes int
	last   *overseer.State
}

func (c *recordingConsumer) ReconcileWorldview(_ context.Context, s *overseer.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.passes++
	c.last = s
}

func (c *recordingConsumer) snapshot() (int, *overseer.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passes, c.last
}

type panickingConsumer struct{}

func (panickingConsumer) ReconcileWorldview(context.Context, *overseer.State) {
	panic("consumer exploded")
}

// Every reconcile pass (boot and periodic) hands the worldview consumers a
// snapshot that already holds what the bus applied, even when a consumer
// before them panics.
func TestStartReappliesWorldviewOnEveryReconcile(t *testing.T) {
	env := newDTEnv(t, nil)
	rec := &recordingConsumer{}
	cleanup, err := Start(context.Background(), StartDeps{Registry: env.reg, DockerLister: &fakeLister{},
		PeerLookup: &fakePeerLookup{}, Dialer: env.dialer, Bus: env.bus, ReconcileInterval: 5 * time.Millisecond,
		Worldview: []WorldviewConsumer{panickingConsumer{}, rec}})
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if n, _ := rec.snapshot(); n < 1 {
		t.Fatal("boot reconcile did not run the worldview consumers")
	}
	id := dtContainerID(t)
	env.bus.Publish(SessionConnected{Subject: overseer.Subject{ContainerID: id, AgentName: "dev", Project: "proj"}, At: time.Now()})
	env.bus.Publish(AgentUntrusted{Subject: overseer.Subject{ContainerID: id}, Reason: overseer.ReasonThumbprintMismatch, At: time.Now()})
	dtWait(t, "a periodic pass seeing the untrusted agent", func() bool {
		_, s := rec.snapshot()
		if s == nil {
			return false
		}
		a, ok := s.Agents[id]
		return ok && len(a.UntrustedReasons) == 1 && !a.ConnectedAt.IsZero()
	})
}

// A Register that fails on the CP side (here a flooded token endpoint,
// twice) is retried on the same Session, so the honest agent ends
// registered and trusted; a refusal by the gate is never retried.
func TestRegisterRetriesCPSideFailures(t *testing.T) {
	const flooded = "token exchange: oauth2: cannot fetch token: 503 Service Unavailable"
	for _, tc := range []struct {
		name  string
		fails []string
		ok    bool
		tries int
	}{
		{"cp side twice, then ok", []string{flooded, flooded}, true, 3},
		{"cp side every time", []string{flooded, flooded, flooded, flooded}, false, registerAttempts},
		{"gate refusal", []string{`token exchange: oauth2: "invalid_client" "client authentication failed"`}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newDTEnv(t, nil, withRegisterPause(5*time.Millisecond))
			f := &fakeClawkerd{registerOK: true, registerFailFirst: tc.fails}
			id, _ := env.agent(t, f)
			var once sync.Once // RegisterRequired comes once per try
			f.onRegister = func() { once.Do(func() { addRow(t, env.reg, id, f.leaf) }) }
			env.dialer.DialAgent(context.Background(), id)
			r := env.rec.wait(t, id, EventAgentRegistered).(AgentRegistered)
			if r.Ok != tc.ok {
				t.Fatalf("AgentRegistered %+v, want Ok=%v", r, tc.ok)
			}
			tries := 0
			for _, s := range f.seen() {
				if s == "register" {
					tries++
				}
			}
			if tries != tc.tries {
				t.Fatalf("RegisterRequired sent %d times, want %d", tries, tc.tries)
			}
			if n := len(env.rec.events(id)); tc.ok {
				env.rec.wait(t, id, EventInitCompleted)
				if a, _ := env.bus.Agent(id); !a.Trusted || !a.Registered {
					t.Fatalf("worldview %+v (events %d)", a, n)
				}
			}
		})
	}
}
