package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// adminConn is an AdminService client over mTLS: the CLI cert, the clawker
// CA as the only root, and the server name pinned to the CP's DNS SAN.
type adminConn struct {
	conn *grpc.ClientConn
	adminv1.AdminServiceClient
}

func (c *adminConn) Close() error { return c.conn.Close() }

func (a *app) admin(ctx context.Context) (*adminConn, error) {
	h, err := a.home()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := adminTLS(h)
	if err != nil {
		return nil, err
	}
	addr, err := a.adminAddr(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("admin client for %s: %w", addr, err)
	}
	return &adminConn{conn: conn, AdminServiceClient: adminv1.NewAdminServiceClient(conn)}, nil
}

func adminTLS(h auth.Home) (*tls.Config, error) {
	for _, f := range []string{consts.CLICertFile, consts.CLIKeyFile, consts.CACertFile} {
		if _, err := os.Stat(h.Path(f)); err != nil {
			return nil, withCode(ExitUsage, fmt.Errorf("clawker home %s is not initialised (%s missing): run clawker init", h.Dir, f))
		}
	}
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
