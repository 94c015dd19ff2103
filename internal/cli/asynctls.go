package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// asyncTLS is TLS transport credentials whose config is still being built
// (PEM and key parsing) while gRPC resolves the address and opens the TCP
// connection: the handshake waits for the config, so the two overlap
// instead of adding up on every command.
type asyncTLS struct {
	done  chan struct{} // closed once creds or err is set
	creds credentials.TransportCredentials
	err   error
}

// newAsyncTLS starts load in a goroutine.
func newAsyncTLS(load func() (*tls.Config, error)) *asyncTLS {
	c := &asyncTLS{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		cfg, err := load()
		if err != nil {
			c.err = err
			return
		}
		c.creds = credentials.NewTLS(cfg)
	}()
	return c
}

// wait returns the config's load error once it is known.
func (c *asyncTLS) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *asyncTLS) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if err := c.wait(ctx); err != nil {
		return nil, nil, err
	}
	return c.creds.ClientHandshake(ctx, authority, conn)
}

func (c *asyncTLS) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("asyncTLS: client credentials only")
}

func (c *asyncTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

// Clone shares the one load: the config is immutable once built.
func (c *asyncTLS) Clone() credentials.TransportCredentials { return c }

// OverrideServerName is refused: the server name is pinned in the config.
func (c *asyncTLS) OverrideServerName(string) error {
	return errors.New("asyncTLS: the server name is pinned")
}
