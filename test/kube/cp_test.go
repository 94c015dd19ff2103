package kube

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	networkingv1 "k8s.io/api/networking/v1"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// controlPlane is a CP the scenario runs agents under: a host process or
// a Deployment in the cluster.
type controlPlane interface {
	agentAddr() string
	tokenURL() string
	// peer is the CP as the agents' NetworkPolicy admits it (nil: an IP
	// block of the agent address).
	peer() *networkingv1.NetworkPolicyPeer
	keys() auth.Home
	api() *cpClient
	restart(t *testing.T)
	log(t *testing.T) string // the current run's log
}

// cpClient reaches one CP's admin API and /metrics.
type cpClient struct {
	admin      adminv1.AdminServiceClient
	healthAddr string
}

// dialAdmin connects to the admin API at addr with the home's CLI cert.
func dialAdmin(t *testing.T, home auth.Home, addr, healthAddr string) *cpClient {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(home.Path(consts.CLICertFile), home.Path(consts.CLIKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := auth.ReadCertPool(home.Path(consts.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: consts.ControlPlaneCN})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &cpClient{admin: adminv1.NewAdminServiceClient(conn), healthAddr: healthAddr}
}

// cp is one clawker-cp host process on the kubernetes runtime. Pods reach
// it at the gateway; its data dir outlives a restart.
type cp struct {
	*cpClient
	c         *cluster
	home      auth.Home
	ns, data  string
	agentPort int
	tokenPort int
	adminAddr string
	cmd       *exec.Cmd
	logPath   string
	runs      int
}

func (p *cp) peer() *networkingv1.NetworkPolicyPeer { return nil }
func (p *cp) keys() auth.Home                       { return p.home }
func (p *cp) api() *cpClient                        { return p.cpClient }
func (p *cp) restart(t *testing.T)                  { p.stop(t); p.start(t) }

func startCP(t *testing.T, c *cluster, ns string) *cp {
	t.Helper()
	home := auth.Home{Dir: t.TempDir()}
	if _, err := home.Init(time.Now()); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 4)
	p := &cp{c: c, home: home, ns: ns, data: t.TempDir(), agentPort: ports[0], tokenPort: ports[1],
		adminAddr: "127.0.0.1:" + itoa(ports[2]), cpClient: &cpClient{healthAddr: "127.0.0.1:" + itoa(ports[3])}}
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
	p.cpClient = dialAdmin(t, home, p.adminAddr, p.healthAddr)
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
func (p *cp) log(*testing.T) string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// agents lists the CP's agents by workload ID.
func (p *cpClient) agents(ctx context.Context) (map[string]*adminv1.Agent, error) {
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
func (p *cpClient) exec(ctx context.Context, id string, argv ...string) (string, int32, error) {
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

// metric reads one sample of the CP's /metrics ("" labels: the first
// series of that name); 0 when absent.
func (p *cpClient) metric(t *testing.T, name, labels string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.healthAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if ok && series == name+labels {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	return 0
}
