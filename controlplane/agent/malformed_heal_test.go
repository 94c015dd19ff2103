package agent_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/sqlitedb"
)

// TestMalformedRowHealedThroughDial: a registry row that fails
// re-validation is a miss at Hello time (as the spec says), so the dialer
// sends RegisterRequired, the real clawkerd registers through the real
// token endpoint and Register handler, and the handler's evict-and-rewrite
// heals the row: the agent ends registered and trusted.
func TestMalformedRowHealedThroughDial(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh on this host")
	}
	c := newChain(t)
	const n = 7
	rc := resolved(t, n, "proj", "dev")
	c.lookup.set(rc, nil)
	leaf := c.agentLeaf(t, n, "proj", "dev")

	// A row for the container that no longer re-validates.
	stale := c.agentLeaf(t, n, "proj", "dev")
	now := time.Now()
	if err := c.reg.Add(agent.Entry{AgentName: rc.AgentName, Project: rc.Project, ContainerID: rc.ContainerID,
		Thumbprint: auth.Thumbprint(stale.Cert), RegisteredAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	db, err := sqlitedb.Open(c.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE agents SET agent_name = '' WHERE container_id = ?`, rc.ContainerID); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := c.reg.LookupByContainerID(rc.ContainerID); !errors.Is(err, agent.ErrMalformedEntry) {
		t.Fatalf("setup: lookup = %v, want ErrMalformedEntry", err)
	}

	// The real clawkerd, registering against the chain.
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.Cert)
	assertion, err := auth.MintAssertion(c.cliKey, rc.ContainerID, c.clock())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := clawkerd.NewServer(clawkerd.Config{Cert: tlsCert(leaf), CAPool: pool, AgentName: "dev", Project: "proj",
		InitMarkerPath: filepath.Join(t.TempDir(), "initialized"), Console: io.Discard,
		Assertion: assertion, CPTokenURL: c.tokenURL, CPAgentAddr: c.agentAddr}, logger.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })

	// The dialer, as the CP wires it, minus Docker.
	cp, err := c.ca.MintControlPlane(nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPEM, err := auth.KeyPEM(cp.Key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cp.pem"), filepath.Join(dir, "cp-key.pem")
	if err := os.WriteFile(certPath, auth.CertPEM(cp.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	bus := overseer.New(logger.Nop())
	var mu sync.Mutex
	var events []overseer.Event
	t.Cleanup(bus.Subscribe("heal-test", nil, func(e overseer.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }))
	exec, err := agent.NewExecutor(logger.Nop(), bus)
	if err != nil {
		t.Fatal(err)
	}
	d, err := agent.New(logger.Nop(), nil, bus, c.reg, certPath, keyPath, pool, exec,
		agent.WithResolver(func(context.Context, string) (agent.DialTarget, error) {
			return agent.DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"}, nil
		}), agent.WithRetry(time.Millisecond, 5*time.Millisecond, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.CancelAll)
	d.DialAgent(context.Background(), rc.ContainerID)

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		var registered *agent.AgentRegistered
		var untrusted []agent.AgentUntrusted
		initDone := false
		for _, e := range events {
			switch e := e.(type) {
			case agent.AgentRegistered:
				registered = &e
			case agent.AgentUntrusted:
				untrusted = append(untrusted, e)
			case agent.InitCompleted:
				initDone = true
			}
		}
		mu.Unlock()
		if len(untrusted) > 0 {
			t.Fatalf("agent reported untrusted: %+v\nlogs:\n%s", untrusted, c.logs.String())
		}
		if registered != nil && initDone {
			if !registered.Ok {
				t.Fatalf("AgentRegistered = %+v\nlogs:\n%s", registered, c.logs.String())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no AgentRegistered+InitCompleted; events %v\nlogs:\n%s", events, c.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	e, err := c.reg.LookupByContainerID(rc.ContainerID)
	if err != nil || e.Thumbprint != auth.Thumbprint(leaf.Cert) {
		t.Fatalf("row after heal: %+v, %v", e, err)
	}
}
