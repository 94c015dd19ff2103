package agent

// Test scaffolding for the dialer, executor and Start tests: a throwaway
// PKI, a scriptable in-process ClawkerdService over strict mTLS
// (dialer_fakeclawkerd_test.go), and an
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
	"sync"
	"testing"
	"time"

	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/testpki"
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
	tp       *testpki.PKI
	ca       *auth.CA
	pool     *x509.CertPool
	certPath string
	keyPath  string
}

func newDTPKI(t testing.TB) *dtPKI {
	t.Helper()
	tp := testpki.New(t)
	cp := tp.CP
	dir := t.TempDir()
	keyPEM, err := auth.KeyPEM(cp.Key)
	if err != nil {
		t.Fatal(err)
	}
	p := &dtPKI{tp: tp, ca: tp.CA, pool: tp.Pool, certPath: filepath.Join(dir, "cp.pem"), keyPath: filepath.Join(dir, "cp-key.pem")}
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
	return p.tp.AgentNamed(t, project, agent, containerID)
}

// dtTargets maps container IDs to dial targets for WithResolver.
type dtTargets struct {
	mu sync.Mutex
	m  map[string]DialTarget
	e  map[string]error
	n  map[string]int
	// hold, when set, makes every resolve of a container after its first
	// wait until it is closed (a slow Docker inspect).
	hold chan struct{}
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
	d.n[id]++
	if hold := d.hold; hold != nil && d.n[id] > 1 {
		d.mu.Unlock()
		<-hold
		d.mu.Lock()
	}
	defer d.mu.Unlock()
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
	addr, marker, _ = startRealClawkerdServer(t, env, id)
	return addr, marker
}

// startRealClawkerdServer is startRealClawkerd returning the server too.
func startRealClawkerdServer(t testing.TB, env *dtEnv, id string) (addr, marker string, srv *clawkerd.Server) {
	t.Helper()
	return startRealClawkerdWith(t, env, id, nil)
}

// startRealClawkerdWith is startRealClawkerdServer with mutate applied
// to the clawkerd Config.
func startRealClawkerdWith(t testing.TB, env *dtEnv, id string, mutate func(*clawkerd.Config)) (addr, marker string, srv *clawkerd.Server) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh on this host")
	}
	leaf := env.pki.agentLeaf(t, "proj", "dev", id)
	marker = filepath.Join(t.TempDir(), "initialized")
	var err error
	cfg := clawkerd.Config{
		Cert:           tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert},
		CAPool:         env.pki.pool,
		AgentName:      "dev",
		Project:        "proj",
		InitMarkerPath: marker,
		Console:        io.Discard,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err = clawkerd.NewServer(cfg, logger.Nop())
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
	return ln.Addr().String(), marker, srv
}
