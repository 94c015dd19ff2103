package agent_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// BenchmarkRegisterChain measures the CP side of one agent registration
// (token exchange, then Register) through the real listener stack: TLS,
// issuer (assertion verify, jti burn in sqlite, mint), AuthInterceptor,
// IdentityInterceptor, Handler, sqlite registry insert. The Docker peer
// lookup is faked, so its inspect is not in these numbers. Client-side
// minting (cert, assertion) is outside the timer.
//
// cold dials a fresh TLS connection per call, as clawkerd did before it
// pre-warmed them; warm reuses one connection per listener (one agent
// whose row is evicted between iterations), isolating the server work.
func BenchmarkRegisterChain(b *testing.B) {
	req := &agentv1.RegisterRequest{AgentName: "bench", Project: "proj"}
	b.Run("cold", func(b *testing.B) {
		c := newChain(b)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			n := 1000 + i
			c.lookup.set(resolved(b, n, "proj", "bench"), nil)
			leaf := c.agentLeaf(b, n, "proj", "bench")
			b.StartTimer()
			tok := c.fetchToken(b, leaf, n, consts.ScopeRegister)
			if err := c.register(b, leaf, tok, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		c := newChain(b)
		const n = 1000
		c.lookup.set(resolved(b, n, "proj", "bench"), nil)
		leaf := c.agentLeaf(b, n, "proj", "bench")
		hc := c.tokenClient(leaf)
		b.Cleanup(hc.CloseIdleConnections)
		conn, err := grpc.NewClient(c.agentAddr, grpc.WithTransportCredentials(credentials.NewTLS(c.clientTLS(leaf))))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		cli := agentv1.NewAgentServiceClient(conn)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if err := c.reg.EvictByContainerID(cid(n)); err != nil {
				b.Fatal(err)
			}
			a, err := auth.MintAssertion(c.cliKey, cid(n), c.clock())
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			tok := c.redeem(b, hc, a, consts.ScopeRegister)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
			if _, err := cli.Register(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
