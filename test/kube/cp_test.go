package kube

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// cp is one clawker-cp host process on the kubernetes runtime. Pods reach
// it at the gateway; its data dir outlives a restart.
type cp struct {
	c          *cluster
	home       auth.Home
	ns, data   string
	agentPort  int
	tokenPort  int
	adminAddr  string
	healthAddr string
	cmd        *exec.Cmd
	logPath    string
	admin      adminv1.AdminServiceClient
	conn       *grpc.ClientConn
	runs       int
}

func startCP(t *testing.T, c *cluster, ns string) *cp {
	t.Helper()
	home := auth.Home{Dir: t.TempDir()}
	if _, err := home.Init(time.Now()); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 4)
	p := &cp{c: c, home: home, ns: ns, data: t.TempDir(), agentPort: ports[0], tokenPort: ports[1],
		adminAddr: "127.0.0.1:" + itoa(ports[2]), healthAddr: "127.0.0.1:" + itoa(ports[3])}
	p.start(t)
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			for i := 1; i <= p.runs; i++ {
				b, _ := os.ReadFile(p.logFile(i))
				t.Logf("clawker-cp run %d log:\n%s", i, b)
			}
		}
	})
	cert, err := tls.LoadX509KeyPair(home.Path(consts.CLICertFile), home.Path(consts.CLIKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := auth.ReadCertPool(home.Path(consts.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	p.conn, err = grpc.NewClient(p.adminAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: consts.ControlPlaneCN})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	p.admin = adminv1.NewAdminServiceClient(p.conn)
	return p
}

func (p *cp) logFile(run int) string { return filepath.Join(p.data, fmt.Sprintf("cp-%d.log", run)) }

// agentAddr and tokenURL are where pods reach this CP.
func (p *cp) agentAddr() string { return fmt.Sprintf("%s:%d", p.c.gateway, p.agentPort) }
func (p *cp) tokenURL() string {
	return fmt.Sprintf("https://%s:%d%s", p.c.gateway, p.tokenPort, consts.TokenPath)
}

// start runs the CP and waits until /healthz says ready.
func (p *cp) start(t *testing.T) {
	t.Helper()
	p.runs++
	p.logPath = p.logFile(p.runs)
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(filepath.Join(p.c.binDir, "clawker-cp"),
		"--runtime=kubernetes", "--kubeconfig="+os.Getenv("KUBECONFIG"), "--namespace="+p.ns,
		"--config-dir="+p.home.Dir, "--data-dir="+p.data,
		"--agent-addr=:"+itoa(p.agentPort), "--token-addr=:"+itoa(p.tokenPort),
		"--admin-addr="+p.adminAddr, "--health-addr="+p.healthAddr, "--log-level=debug")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "clawker-cp ready", func() error {
		resp, err := http.Get("http://" + p.healthAddr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
}

// stop ends the CP gracefully (bounded), as a restart would.
func (p *cp) stop(t *testing.T) {
	t.Helper()
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

// log is what the current run has logged.
func (p *cp) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// agents lists the CP's agents by workload ID.
func (p *cp) agents(ctx context.Context) (map[string]*adminv1.Agent, error) {
	res, err := p.admin.ListAgents(ctx, &adminv1.ListAgentsRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]*adminv1.Agent{}
	for _, a := range res.GetAgents() {
		out[a.GetContainerId()] = a
	}
	return out, nil
}

// exec runs argv in the agent through the CP and returns its output and
// exit code.
func (p *cp) exec(ctx context.Context, id string, argv ...string) (string, int32, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := p.admin.Exec(ctx)
	if err != nil {
		return "", 0, err
	}
	if err := st.Send(&adminv1.ExecRequest{Payload: &adminv1.ExecRequest_Start{Start: &adminv1.ExecStart{
		Agent: &adminv1.AgentRef{ContainerId: id}, Argv: argv, TimeoutSeconds: 30}}}); err != nil {
		return "", 0, err
	}
	_ = st.CloseSend()
	var out strings.Builder
	for {
		r, err := st.Recv()
		if err != nil {
			return out.String(), 0, fmt.Errorf("exec %v: %w (output %q)", argv, err, out.String())
		}
		switch pl := r.Payload.(type) {
		case *adminv1.ExecResponse_Output:
			out.Write(pl.Output)
		case *adminv1.ExecResponse_Error:
			return out.String(), 0, fmt.Errorf("exec %v: %s", argv, pl.Error)
		case *adminv1.ExecResponse_ExitCode:
			return out.String(), pl.ExitCode, nil
		}
	}
}
