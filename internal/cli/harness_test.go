package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/admin"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// harness runs the CLI in-process. Its Docker factory counts calls and
// returns docker, or (nil) fails, so nothing can be created.
type harness struct {
	home        string
	docker      dockerAPI
	dockerCalls int
}

func (h *harness) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{in: strings.NewReader(""), out: &out, errOut: &errb, now: time.Now,
		newDocker: func() (dockerAPI, error) {
			h.dockerCalls++
			if h.docker != nil {
				return h.docker, nil
			}
			return nil, errors.New("docker disabled in unit tests")
		}}
	code := a.run(context.Background(), append([]string{"--home", h.home}, args...))
	return out.String(), errb.String(), code
}

func initHome(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := (auth.Home{Dir: dir}).Init(time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveAdminDeps runs a real AdminService with the CP identity of cpHome
// and deps (an empty registry, a fresh bus and a ready health check when
// unset), and returns its address.
func serveAdminDeps(t *testing.T, cpHome string, deps admin.Deps) string {
	t.Helper()
	h := auth.Home{Dir: cpHome}
	cert, err := tls.LoadX509KeyPair(h.Path(consts.CPCertFile), h.Path(consts.CPKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := auth.ReadCertPool(h.Path(consts.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if deps.Registry == nil {
		deps.Registry = agent.NewRegistry(logger.Nop())
	}
	if deps.Bus == nil {
		deps.Bus = overseer.New(nil)
	}
	if deps.Health == nil {
		deps.Health = func() (bool, map[string]string) { return true, nil }
	}
	srv, err := admin.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, s := admin.Interceptors(nil)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(admin.ServerTLSConfig(cert, pool))), grpc.UnaryInterceptor(u), grpc.StreamInterceptor(s))
	adminv1.RegisterAdminServiceServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// serveAdmin serves a registry holding rows.
func serveAdmin(t *testing.T, cpHome string, rows []agent.Entry) string {
	t.Helper()
	reg := agent.NewRegistry(logger.Nop())
	for _, r := range rows {
		if err := reg.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	return serveAdminDeps(t, cpHome, admin.Deps{Registry: reg})
}
