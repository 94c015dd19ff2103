package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/oldclawkerd"
	"github.com/clawker/clawker/internal/testenv/testpki"
)

// TestTerminalAgainstOldClawkerd: through the real Dialer, a clawkerd
// without tty/v1 (the base-contract fake) refuses exec -t and attach with
// a message that says why and what to do, before anything runs there;
// a plain exec on the same Session still works.
func TestTerminalAgainstOldClawkerd(t *testing.T) {
	old := &oldclawkerd.Server{Initialized: true, CmdRunning: true}
	d, id := dialOldClawkerd(t, old)
	ex := dialerExecer{d: d}
	ctx := context.Background()
	before := len(old.Shells()) // the Dialer's own probe of the peer

	for _, tc := range []struct {
		name  string
		start *adminv1.ExecStart
		want  string
	}{
		{"exec -t", &adminv1.ExecStart{Argv: []string{"sh"}, Tty: true, TtyRows: 30, TtyCols: 100}, "cannot give a command a terminal"},
		{"attach", &adminv1.ExecStart{Attach: true, Tty: true}, "cannot attach to its command's terminal"},
	} {
		_, err := ex.Exec(ctx, id, tc.start)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "recreate the agent") {
			t.Fatalf("%s against an old clawkerd: want an error saying %q and what to do, got %v", tc.name, tc.want, err)
		}
	}
	if n := len(old.Shells()) - before; n != 0 {
		t.Fatalf("refused terminals still sent %d ShellCommands: %v", n, old.Shells()[before:])
	}

	es, err := ex.Exec(ctx, id, &adminv1.ExecStart{Argv: []string{"echo", "plain"}, User: "root", SeparateStderr: true})
	if err != nil {
		t.Fatalf("plain exec: %v", err)
	}
	defer es.Close()
	if err := es.CloseStdin(); err != nil { // the base contract's Done waits for it
		t.Fatal(err)
	}
	var out strings.Builder
	for {
		data, _, code, err := es.Recv()
		if errors.Is(err, io.EOF) {
			if code != 0 || out.String() != "plain\n" {
				t.Fatalf("plain exec: code %d output %q", code, out.String())
			}
			break
		}
		if err != nil {
			t.Fatalf("plain exec: %v", err)
		}
		out.Write(data)
	}
	if sc := old.Shells()[before:]; len(sc) != 1 || sc[0].GetTty() != nil || sc[0].GetSeparateStderr() {
		t.Fatalf("plain exec to a peer without tty/v1 must carry neither tty nor separate_stderr: %v", sc)
	}
}

// dialOldClawkerd serves srv as a registered agent's clawkerd over mTLS
// and returns a Daemon whose Dialer has a live Session to it.
func dialOldClawkerd(t *testing.T, srv *oldclawkerd.Server) (*Daemon, string) {
	t.Helper()
	pki := testpki.New(t)
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b)
	leaf := pki.AgentNamed(t, "proj", "dev", id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pki.Pool, MinVersion: tls.VersionTLS13,
	})))
	clawkerdv1.RegisterClawkerdServiceServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cp.pem"), filepath.Join(dir, "cp-key.pem")
	keyPEM, err := auth.KeyPEM(pki.CP.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.WriteFile(certPath, auth.CertPEM(pki.CP.Cert), 0o600), os.WriteFile(keyPath, keyPEM, 0o600)); err != nil {
		t.Fatal(err)
	}
	reg := agent.NewRegistry(logger.Nop())
	an, _ := auth.NewAgentName("dev")
	ps, _ := auth.NewProjectSlug("proj")
	now := time.Now()
	if err := reg.Add(agent.Entry{AgentName: an, Project: ps, ContainerID: id, Thumbprint: auth.Thumbprint(leaf.Cert),
		RegisteredAt: now, LastSeen: now}); err != nil {
		t.Fatal(err)
	}
	bus := overseer.New(logger.Nop())
	exec, err := agent.NewExecutor(logger.Nop(), bus)
	if err != nil {
		t.Fatal(err)
	}
	target := agent.DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"}
	dialer, err := agent.New(logger.Nop(), nil, bus, reg, certPath, keyPath, pki.Pool, exec,
		agent.WithResolver(func(context.Context, string) (agent.DialTarget, error) { return target, nil }),
		agent.WithRetry(time.Millisecond, 5*time.Millisecond, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dialer.CancelAll)
	dialer.DialAgent(context.Background(), id)
	waitFor(t, "a ready Session to the old clawkerd", func() bool {
		s := dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	return &Daemon{dialer: dialer}, id
}
