package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/clawker/clawker/internal/logger"
)

// setFor sets *p to v for the test.
func setFor[T any](t *testing.T, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

// closedByServer reports whether the server hangs up c within d.
func closedByServer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadAll(c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestHealthIdleKeepAliveClosed: an idle keep-alive conn on /healthz is
// closed by the server (before, only ReadHeaderTimeout was set and it
// stayed open forever).
func TestHealthIdleKeepAliveClosed(t *testing.T) {
	setFor(t, &healthIdleTimeout, 200*time.Millisecond)
	var log syncBuf
	d, _, _ := start(t, testConfig(t), &log)
	c, err := net.Dial("tcp", d.Addr("health"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf), "HTTP/1.1 ") {
		t.Fatalf("no response: %v %q", err, buf[:20])
	}
	if !closedByServer(c, 5*time.Second) {
		t.Fatal("idle keep-alive conn still open after 5 s (IdleTimeout 200 ms)")
	}
}

// TestHealthRefusesNonOperatorPeers: the health listener (/healthz,
// /metrics) closes conns from peers the operator filter refuses, before
// any HTTP is read, and counts them on /metrics.
func TestHealthRefusesNonOperatorPeers(t *testing.T) {
	var log syncBuf
	dd := New(testConfig(t), "test", logger.New(&log, "debug", "clawker-cp"),
		WithDocker(func() (mobyclient.APIClient, error) { return nil, errNoDocker }))
	dd.dos.operatorAllow = func(netip.Addr) bool { return false }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = dd.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "health bound", func() bool { return dd.Addr("health") != "" })
	_, err := http.Get("http://" + dd.Addr("health") + "/metrics")
	if err == nil {
		t.Fatal("/metrics answered a refused peer")
	}
	// The client can see the close before the server has logged and
	// counted it: wait for both rather than read them at once.
	waitFor(t, "peer_not_allowed line", func() bool {
		return strings.Contains(log.String(), `"reason":"peer_not_allowed"`)
	})
	waitFor(t, "refusal counted", func() bool {
		dd.dos.mu.Lock()
		defer dd.dos.mu.Unlock()
		return dd.dos.refused[[2]string{"health", "peer_not_allowed"}] > 0
	})
}

func TestOperatorFilterAdmitsLoopbackAndGatewayOnly(t *testing.T) {
	route := filepath.Join(t.TempDir(), "route")
	// 172.18.0.1 as the default gateway of eth0 (hex, little-endian), and
	// the on-link subnet route.
	body := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"eth0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
	if err := os.WriteFile(route, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newOperatorFilter(route)
	for ip, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "172.18.0.1": true,
		"172.18.0.2": false, "172.18.0.5": false, "10.0.0.1": false,
	} {
		if got := f.allow(netip.MustParseAddr(ip)); got != want {
			t.Errorf("allow(%s) = %v, want %v", ip, got, want)
		}
	}
	if g := newOperatorFilter(filepath.Join(t.TempDir(), "missing")); g.allow(netip.MustParseAddr("172.18.0.1")) {
		t.Error("an unreadable route table admitted a non-loopback peer")
	}
}

// TestAgentListenerPerPeerCap: the agent listener admits maxConnsPerPeer
// conns from one IP and closes the next at accept.
func TestAgentListenerPerPeerCap(t *testing.T) {
	var log syncBuf
	d := New(testConfig(t), "test", logger.New(&log, "debug", "clawker-cp"))
	ln, err := d.bind("agent", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	max := maxConnsPerPeer["agent"]
	var held []net.Conn
	for i := 0; i < max; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	for _, c := range held[:1] {
		if closedByServer(c, 200*time.Millisecond) {
			t.Fatal("a conn within the cap was closed")
		}
	}
	extra, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedByServer(extra, 5*time.Second) {
		t.Fatalf("conn %d beyond the cap of %d stayed open", max+1, max)
	}
}

// grpcServe serves a gRPC health service with opts on loopback.
func grpcServe(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, healthgrpc.NewServer())
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// TestAgentServerLimits: the agent API's gRPC options close a conn that
// never finishes its handshake, send GOAWAY to an idle conn, and cap
// concurrent streams per conn.
func TestAgentServerLimits(t *testing.T) {
	setFor(t, &grpcHandshakeTimeout, 300*time.Millisecond)
	setFor(t, &agentMaxConnIdle, 300*time.Millisecond)
	addr := grpcServe(t, agentServerLimits()...)

	// Half-open: TCP up, no HTTP/2 preface.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if !closedByServer(raw, 5*time.Second) {
		t.Fatal("a conn that never handshakes stayed open")
	}

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Streams beyond MaxConcurrentStreams wait for a slot: the first
	// agentMaxConcurrentStreams Watches answer, the next does not.
	var streams []context.CancelFunc
	for i := 0; i < agentMaxConcurrentStreams; i++ {
		sctx, scancel := context.WithCancel(ctx)
		streams = append(streams, scancel)
		w, err := hc.Watch(sctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	octx, ocancel := context.WithTimeout(ctx, 300*time.Millisecond)
	w, err := hc.Watch(octx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	ocancel()
	if err == nil {
		t.Fatalf("stream %d beyond MaxConcurrentStreams was served", agentMaxConcurrentStreams+1)
	}
	for _, c := range streams {
		c()
	}
	// Idle (no stream): the server sends GOAWAY and the conn leaves Ready.
	waitFor(t, "idle conn closed by the server", func() bool {
		s := cc.GetState()
		return s == connectivity.Idle || s == connectivity.TransientFailure || s == connectivity.Shutdown
	})
}

// TestAdminRefusesNonOperatorPeers: the admin listener serves only the
// CLI through the published port; a peer the operator filter refuses (a
// container on clawker-net) is closed at accept, before TLS, and counted.
func TestAdminRefusesNonOperatorPeers(t *testing.T) {
	var log syncBuf
	dd := New(testConfig(t), "test", logger.New(&log, "debug", "clawker-cp"),
		WithDocker(func() (mobyclient.APIClient, error) { return nil, errNoDocker }))
	dd.dos.operatorAllow = func(netip.Addr) bool { return false }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = dd.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "admin bound", func() bool { return dd.Addr("admin") != "" })
	c, err := net.Dial("tcp", dd.Addr("admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !closedByServer(c, 5*time.Second) {
		t.Fatal("admin kept a conn from a refused peer open")
	}
	waitFor(t, "refusal counted", func() bool {
		dd.dos.mu.Lock()
		defer dd.dos.mu.Unlock()
		return dd.dos.refused[[2]string{"admin", "peer_not_allowed"}] > 0
	})
}
