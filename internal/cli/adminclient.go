package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/rpcbuf"
)

// adminConn is an AdminService client over mTLS: the CLI cert, the clawker
// CA as the only root, and the server name pinned to the CP's DNS SAN.
type adminConn struct {
	conn *grpc.ClientConn
	adminv1.AdminServiceClient

	release func() // the runtime's admin address (a port-forward), if any
}

func (c *adminConn) Close() error {
	err := c.conn.Close()
	if c.release != nil {
		c.release()
	}
	return err
}

// adminAddrFile caches, in the clawker home, the loopback address Docker
// published the CP's admin port on, so a command skips the Docker ping and
// inspect (two engine round trips) on every run. The cache is only a hint:
// the address must be loopback, the connection must come up (mTLS pinned
// to this home's CA and the CP's name), and anything else falls back to
// asking Docker and rewrites the file.
const adminAddrFile = "cp-admin-addr"

// cachedDialWait bounds how long a cached address may take to connect
// before the CLI asks Docker instead (a loopback handshake takes ms).
const cachedDialWait = 3 * time.Second

func (a *app) admin(ctx context.Context) (*adminConn, error) {
	h, err := a.home()
	if err != nil {
		return nil, err
	}
	if err := checkHome(h); err != nil {
		return nil, err
	}
	creds := newAsyncTLS(func() (*tls.Config, error) { return adminTLS(h) })
	ac, err := a.dialCP(ctx, h, creds)
	// A cert that does not load is the clearer error of the two.
	if cerr := creds.wait(ctx); cerr != nil {
		if ac != nil {
			ac.Close()
		}
		return nil, cerr
	}
	return ac, err
}

// dialCP finds the admin address (the env override, the cached address if
// it connects, else Docker) and returns a client for it.
func (a *app) dialCP(ctx context.Context, h auth.Home, creds credentials.TransportCredentials) (*adminConn, error) {
	if v := os.Getenv(EnvCPAdminAddr); v != "" {
		return dialAdmin(v, creds)
	}
	if a.rt != nil {
		addr, release, err := a.rt.AdminAddr(ctx)
		if err != nil {
			return nil, err
		}
		ac, err := dialAdmin(addr, creds)
		if err != nil {
			release()
			return nil, err
		}
		ac.release = release
		return ac, nil
	}
	cached := readAdminAddr(h)
	if cached != "" {
		if ac, err := dialAdmin(cached, creds); err == nil {
			if ac.connect(ctx) {
				return ac, nil
			}
			ac.Close()
		}
	}
	addr, err := a.adminAddr(ctx)
	if err != nil {
		return nil, err
	}
	if addr != cached {
		// Best effort: without the cache the next run asks Docker again.
		_ = auth.WriteFileAtomic(h.Path(adminAddrFile), []byte(addr+"\n"), 0o600)
	}
	return dialAdmin(addr, creds)
}

// readAdminAddr returns the cached admin address, or "" when there is none
// or it is not a 127.0.0.1 host:port (the only kind clawker publishes).
func readAdminAddr(h auth.Home) string {
	b, err := os.ReadFile(h.Path(adminAddrFile))
	if err != nil || len(b) > 64 {
		return ""
	}
	addr := strings.TrimSpace(string(b))
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 {
		return ""
	}
	return addr
}

func dialAdmin(addr string, creds credentials.TransportCredentials) (*adminConn, error) {
	// exec -i stdin goes out in large flushes, one syscall each rather
	// than one per 16 KiB TLS record (see rpcbuf.BatchWrites).
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(rpcbuf.BatchWrites(creds))}, adminTransportOptions()...)
	// passthrough: addr is an IP:port (cached, probed or from Docker), so
	// the default DNS resolver would only add a goroutine hop per command.
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("admin client for %s: %w", addr, err)
	}
	return &adminConn{conn: conn, AdminServiceClient: adminv1.NewAdminServiceClient(conn)}, nil
}

// connect brings the connection up now and reports whether it is ready
// (TCP, the mTLS handshake and HTTP/2 settings done). The first RPC would
// wait for the same steps, so this costs nothing when it succeeds.
func (c *adminConn) connect(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, cachedDialWait)
	defer cancel()
	c.conn.Connect()
	for {
		switch st := c.conn.GetState(); st {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		default:
			if !c.conn.WaitForStateChange(ctx, st) {
				return false
			}
		}
	}
}

// checkHome refuses a home without the CLI's cert, key and CA, before
// anything touches Docker or the network.
func checkHome(h auth.Home) error {
	for _, f := range []string{consts.CLICertFile, consts.CLIKeyFile, consts.CACertFile} {
		if _, err := os.Stat(h.Path(f)); err != nil {
			return withCode(ExitUsage, fmt.Errorf("clawker home %s is not initialised (%s missing): run clawker init", h.Dir, f))
		}
	}
	return nil
}

func adminTLS(h auth.Home) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(h.Path(consts.CLICertFile), h.Path(consts.CLIKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CLI cert: %w", err)
	}
	pool, err := auth.ReadCertPool(h.Path(consts.CACertFile))
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   consts.ControlPlaneCN,
		MinVersion:   tls.VersionTLS13,
		// P-256 ECDHE: the certs are ECDSA P-256, so the handshake reuses
		// one curve implementation instead of also running the default
		// X25519MLKEM768 hybrid (a 1.2 KB ML-KEM share, its keygen and
		// decapsulation): ~0.4 ms of every command's handshake. The
		// connection never leaves loopback, so the hybrid's protection of
		// recorded traffic against a future quantum attacker buys nothing.
		CurvePreferences: []tls.CurveID{tls.CurveP256},
	}, nil
}

// rpcError turns a gRPC failure into a message that says what to do next,
// with an exit code a script can branch on.
func rpcError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable:
		if m := st.Message(); strings.Contains(m, "handshake") || strings.Contains(m, "certificate") || strings.Contains(m, "tls:") {
			return withCode(ExitError, fmt.Errorf("%s: TLS with the control plane failed (%s): was it started from this clawker home? try clawker cp up --recreate", op, m))
		}
		if m := st.Message(); strings.Contains(m, "connection") || strings.Contains(m, "dial") {
			return withCode(ExitUnavailable, fmt.Errorf("%s: control plane unreachable (%s): check clawker cp status", op, m))
		}
		return withCode(ExitUnavailable, fmt.Errorf("%s: %s", op, st.Message()))
	case codes.DeadlineExceeded:
		return withCode(ExitUnavailable, fmt.Errorf("%s: control plane unreachable (%s): check clawker cp status", op, st.Message()))
	case codes.NotFound:
		return withCode(ExitNotFound, fmt.Errorf("%s: %s", op, st.Message()))
	case codes.InvalidArgument:
		return withCode(ExitUsage, fmt.Errorf("%s: %s", op, st.Message()))
	case codes.PermissionDenied, codes.Unauthenticated:
		return withCode(ExitError, fmt.Errorf("%s: refused by the control plane (%s): was it started from this clawker home? try clawker cp up --recreate", op, st.Message()))
	}
	return fmt.Errorf("%s: %s", op, st.Message())
}

func rpcTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 15*time.Second)
}
