package agent

import (
	"context"
	"net"
	"testing"
)

// BenchmarkDialAttempt is the CP cost of one dial attempt: "refused" is an
// attempt that lands before clawkerd listens (what the early retries
// repeat), "connect" a successful TLS + Hello→HelloAck against a fake
// clawkerd (the connection is closed after each).
func BenchmarkDialAttempt(b *testing.B) {
	env := newDTEnv(b, nil)
	b.Run("refused", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens: connection refused
		t := DialTarget{Address: addr, AgentName: "dev", Project: "proj"}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, conn, err := env.dialer.connect(context.Background(), t, nil)
			if err == nil {
				b.Fatal("connect to a closed port succeeded")
			}
			if conn != nil {
				_ = conn.Close()
			}
		}
	})
	b.Run("connect", func(b *testing.B) {
		f := &fakeClawkerd{initialized: true}
		id, _ := env.agent(b, f)
		t, err := env.targets.resolve(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			res, _, err := env.dialer.connect(context.Background(), t, nil)
			if err != nil {
				b.Fatal(err)
			}
			res.cancel()
			_ = res.conn.Close()
		}
	})
}

// BenchmarkDialProbeRefused is one listener probe that is refused: what
// the early retries cost now, against BenchmarkDialAttempt/refused.
func BenchmarkDialProbeRefused(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var nd net.Dialer
	for i := 0; i < b.N; i++ {
		if c, err := nd.DialContext(context.Background(), "tcp", addr); err == nil {
			c.Close()
			b.Fatal("probe of a closed port succeeded")
		}
	}
}
