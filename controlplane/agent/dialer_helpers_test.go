package agent

// Test scaffolding for the dialer, executor and Start tests: a throwaway
// PKI, a scriptable in-process ClawkerdService over strict mTLS, and an
// event recorder on the bus. Names carry a dt prefix to stay clear of the
// other test files of this package.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

func dtContainerID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// dtPKI is a CA plus the CP cert written to disk for New.
type dtPKI struct {
	ca       *auth.CA
	pool     *x509.CertPool
	certPath string
	keyPath  string
}

func newDTPKI(t testing.TB) *dtPKI {
	t.Helper()
	now := time.Now()
	ca, err := auth.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ca.MintControlPlane(nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPEM, err := auth.KeyPEM(cp.Key)
	if err != nil {
		t.Fatal(err)
	}
	p := &dtPKI{ca: ca, pool: x509.NewCertPool(), certPath: filepath.Join(dir, "cp.pem"), keyPath: filepath.Join(dir, "cp-key.pem")}
	p.pool.AddCert(ca.Cert)
	if err := os.WriteFile(p.certPath, auth.CertPEM(cp.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *dtPKI) agentLeaf(t testing.TB, project, agent, containerID string) *auth.Leaf {
	t.Helper()
	a, err := auth.NewAgentName(agent)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := auth.NewProjectSlug(project)
	if err != nil {
		t.Fatal(err)
	}
	l, err := p.ca.MintAgent(ps, a, containerID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fakeClawkerd is a scriptable ClawkerdService. Shell commands are
// recognised by the executor's command ids ("init/<step>/<n>").
type fakeClawkerd struct {
	clawkerdv1.UnimplementedClawkerdServiceServer

	initialized, cmdRunning bool
	noShell                 bool
	registerOK              bool
	onRegister              func()
	failStep                map[string]int32
	errStep                 map[string]clawkerdv1.ErrorCode
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

// dtTargets maps container IDs to dial targets for WithResolver.
type dtTargets struct {
	mu sync.Mutex
	m  map[string]DialTarget
	e  map[string]error
	n  map[string]int
}

func newDTTargets() *dtTargets {
	return &dtTargets{m: map[string]DialTarget{}, e: map[string]error{}, n: map[string]int{}}
}

func (d *dtTargets) set(id string, t DialTarget) {
	d.mu.Lock()
	d.m[id] = t
	d.mu.Unlock()
}

func (d *dtTargets) fail(id string, err error) {
	d.mu.Lock()
	d.e[id] = err
	d.mu.Unlock()
}

func (d *dtTargets) calls(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[id]
}

func (d *dtTargets) resolve(_ context.Context, id string) (DialTarget, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n[id]++
	if err := d.e[id]; err != nil {
		return DialTarget{}, err
	}
	t, ok := d.m[id]
	if !ok {
		return DialTarget{}, fmt.Errorf("no target for %s", id)
	}
	return t, nil
}

// dtRecorder records every bus event in publish order.
type dtRecorder struct {
	mu sync.Mutex
	ev []overseer.Event
}

func recordBus(t testing.TB, bus *overseer.Overseer) *dtRecorder {
	r := &dtRecorder{}
	unsub := bus.Subscribe("test-recorder", nil, func(e overseer.Event) {
		r.mu.Lock()
		r.ev = append(r.ev, e)
		r.mu.Unlock()
	})
	t.Cleanup(unsub)
	return r
}

func (r *dtRecorder) events(containerID string) []overseer.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []overseer.Event
	for _, e := range r.ev {
		if containerID == "" || eventContainer(e) == containerID {
			out = append(out, e)
		}
	}
	return out
}

func (r *dtRecorder) names(containerID string) []string {
	var out []string
	for _, e := range r.events(containerID) {
		out = append(out, e.EventName())
	}
	return out
}

func (r *dtRecorder) has(containerID, name string) bool {
	for _, n := range r.names(containerID) {
		if n == name {
			return true
		}
	}
	return false
}

func (r *dtRecorder) wait(t testing.TB, containerID, name string) overseer.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range r.events(containerID) {
			if e.EventName() == name {
				return e
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s on %s; saw %v", name, containerID, r.names(containerID))
	return nil
}

func eventContainer(e overseer.Event) string {
	switch v := e.(type) {
	case SessionConnecting:
		return v.ContainerID
	case SessionConnected:
		return v.ContainerID
	case SessionFailed:
		return v.ContainerID
	case SessionBroken:
		return v.ContainerID
	case SessionClosed:
		return v.ContainerID
	case AgentRegistered:
		return v.ContainerID
	case AgentUntrusted:
		return v.ContainerID
	case InitStarted:
		return v.ContainerID
	case InitStepStarted:
		return v.ContainerID
	case InitStepCompleted:
		return v.ContainerID
	case InitStepFailed:
		return v.ContainerID
	case InitCompleted:
		return v.ContainerID
	case InitFailed:
		return v.ContainerID
	}
	return ""
}

func dtWait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// dtEnv is one dialer under test with its bus, registry and targets.
type dtEnv struct {
	pki     *dtPKI
	bus     *overseer.Overseer
	rec     *dtRecorder
	reg     Registry
	targets *dtTargets
	exec    *Executor
	dialer  *Dialer
}

func newDTEnv(t testing.TB, reg Registry, opts ...DialerOption) *dtEnv {
	t.Helper()
	env := &dtEnv{pki: newDTPKI(t), bus: overseer.New(logger.Nop()), targets: newDTTargets()}
	env.rec = recordBus(t, env.bus)
	if reg == nil {
		reg = NewRegistry(logger.Nop())
	}
	env.reg = reg
	var err error
	env.exec, err = NewExecutor(logger.Nop(), env.bus)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]DialerOption{WithResolver(env.targets.resolve), WithRetry(time.Millisecond, 5*time.Millisecond, 5*time.Second)}, opts...)
	env.dialer, err = New(logger.Nop(), nil, env.bus, reg, env.pki.certPath, env.pki.keyPath, env.pki.pool, env.exec, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.dialer.CancelAll)
	return env
}

// agent starts a fake clawkerd for a fresh container and points the
// resolver at it.
func (env *dtEnv) agent(t testing.TB, f *fakeClawkerd) (string, *fakeClawkerd) {
	t.Helper()
	id := dtContainerID(t)
	startFake(t, env.pki, f, env.pki.agentLeaf(t, "proj", "dev", id))
	env.targets.set(id, DialTarget{Address: f.addr, AgentName: "dev", Project: "proj"})
	return id, f
}

// addRow registers leaf for id in the registry.
func addRow(t testing.TB, reg Registry, id string, leaf *auth.Leaf) {
	t.Helper()
	a, _ := auth.NewAgentName("dev")
	p, _ := auth.NewProjectSlug("proj")
	now := time.Now()
	if err := reg.Add(Entry{AgentName: a, Project: p, ContainerID: id, Thumbprint: auth.Thumbprint(leaf.Cert),
		RegisteredAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
}

// startRealClawkerd serves the real clawkerd Session server in-process on
// 127.0.0.1 with an agent leaf for id, and points id's dial target at it.
// Shell steps run on the host: with no staging directory present they are
// the documented no-ops.
func startRealClawkerd(t testing.TB, env *dtEnv, id string) (addr, marker string) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh on this host")
	}
	leaf := env.pki.agentLeaf(t, "proj", "dev", id)
	marker = filepath.Join(t.TempDir(), "initialized")
	srv, err := clawkerd.NewServer(clawkerd.Config{
		Cert:           tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert},
		CAPool:         env.pki.pool,
		AgentName:      "dev",
		Project:        "proj",
		InitMarkerPath: marker,
		Console:        io.Discard,
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
	addRow(t, env.reg, id, leaf)
	env.targets.set(id, DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"})
	return ln.Addr().String(), marker
}
