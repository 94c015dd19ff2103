package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/testenv/testpki"
)

// unitPKI mints agent certs for handler/interceptor unit tests, which
// build the peer info a verified TLS handshake leaves instead of dialing.
type unitPKI struct{ ca *auth.CA }

func newUnitPKI(t testing.TB) unitPKI {
	return unitPKI{ca: testpki.New(t).CA}
}

func (p unitPKI) leaf(t testing.TB, rc ResolvedContainer) *x509.Certificate {
	l, err := p.ca.MintAgent(rc.Project, rc.AgentName, rc.ContainerID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l.Cert
}

func tlsPeerCtx(ctx context.Context, cert *x509.Certificate, ip string) context.Context {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 5555}}
	if cert != nil {
		p.AuthInfo = credentials.TLSInfo{State: tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{cert},
			VerifiedChains:   [][]*x509.Certificate{{cert}},
		}}
	}
	return peer.NewContext(ctx, p)
}

func rcFor(t testing.TB, n int, project, agent string) ResolvedContainer {
	e := testEntry(t, n, project, agent)
	return ResolvedContainer{ContainerID: e.ContainerID, Project: e.Project, AgentName: e.AgentName}
}

func TestNewHandlerRequiresRegistry(t *testing.T) {
	if _, err := NewHandler(nil, nil, nil); err == nil {
		t.Fatal("nil registry accepted")
	}
	h, err := NewHandler(NewRegistry(nil), nil, nil)
	if err != nil || h.clock == nil || h.log == nil {
		t.Fatalf("defaults not applied: %v", err)
	}
}

func TestRegisterWithoutResolvedContainerIsInternal(t *testing.T) {
	var buf bytes.Buffer
	reg := NewRegistry(nil)
	h, _ := NewHandler(reg, logger.New(&buf, "debug", "t"), nil)
	p := newUnitPKI(t)
	rc := rcFor(t, 1, "p", "a")
	ctx := tlsPeerCtx(context.Background(), p.leaf(t, rc), "10.0.0.2")
	// A zero-value resolved container is dropped by WithResolvedContainer.
	ctx = WithResolvedContainer(ctx, ResolvedContainer{})
	_, err := h.Register(ctx, &agentv1.RegisterRequest{AgentName: "a", Project: "p"})
	if status.Code(err) != codes.Internal || !strings.Contains(buf.String(), evRegisterNoResolved) {
		t.Fatalf("err = %v, log %s", err, buf.String())
	}
	if s, _ := reg.Snapshot(); len(s) != 0 {
		t.Fatal("row written")
	}
}

func TestRegisterWithoutPeerCert(t *testing.T) {
	var buf bytes.Buffer
	reg := NewRegistry(nil)
	h, _ := NewHandler(reg, logger.New(&buf, "debug", "t"), nil)
	ctx := WithResolvedContainer(tlsPeerCtx(context.Background(), nil, "10.0.0.2"), rcFor(t, 1, "p", "a"))
	_, err := h.Register(ctx, &agentv1.RegisterRequest{AgentName: "a", Project: "p"})
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || st.Message() != rejectMessage || !strings.Contains(buf.String(), evRegisterNoPeerCert) {
		t.Fatalf("err = %v, log %s", err, buf.String())
	}
}

// TestRegisterEvictsMalformedRow: a corrupted row for the container is
// replaced by the identity established from the live peer.
func TestRegisterEvictsMalformedRow(t *testing.T) {
	var buf bytes.Buffer
	reg, err := NewSQLiteWriter(filepath.Join(t.TempDir(), "r.db"), logger.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	old := testEntry(t, 1, "p", "a")
	if err := reg.Add(old); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.db.Exec(`UPDATE agents SET agent_name = '' WHERE container_id = ?`, old.ContainerID); err != nil {
		t.Fatal(err)
	}
	h, _ := NewHandler(reg, logger.New(&buf, "debug", "t"), nil)
	p := newUnitPKI(t)
	rc := rcFor(t, 1, "p", "a")
	cert := p.leaf(t, rc)
	ctx := WithResolvedContainer(tlsPeerCtx(context.Background(), cert, "10.0.0.2"), rc)
	if _, err := h.Register(ctx, &agentv1.RegisterRequest{AgentName: "a", Project: "p"}); err != nil {
		t.Fatalf("Register: %v\n%s", err, buf.String())
	}
	got, err := reg.LookupByContainerID(rc.ContainerID)
	if err != nil || got.Thumbprint != auth.Thumbprint(cert) || got.AgentName.String() != "a" {
		t.Fatalf("row after rewrite: %+v, %v", got, err)
	}
	if !strings.Contains(buf.String(), evRegisterMalformedEvicted) {
		t.Fatalf("no %s log line: %s", evRegisterMalformedEvicted, buf.String())
	}
}

type lookupFailsRegistry struct{ Registry }

func (lookupFailsRegistry) LookupByContainerID(string) (*Entry, error) {
	return nil, errors.New("disk on fire")
}

func TestRegisterRegistryFailureIsInternal(t *testing.T) {
	var buf bytes.Buffer
	h, _ := NewHandler(lookupFailsRegistry{NewRegistry(nil)}, logger.New(&buf, "debug", "t"), nil)
	p := newUnitPKI(t)
	rc := rcFor(t, 1, "", "a")
	ctx := WithResolvedContainer(tlsPeerCtx(context.Background(), p.leaf(t, rc), "10.0.0.2"), rc)
	_, err := h.Register(ctx, &agentv1.RegisterRequest{AgentName: "a"})
	if status.Code(err) != codes.Internal || !strings.Contains(buf.String(), evRegisterRegistryError) {
		t.Fatalf("err = %v, log %s", err, buf.String())
	}
}

type mapLookup map[netip.Addr]ResolvedContainer

func (m mapLookup) LookupByIP(_ context.Context, ip netip.Addr) (ResolvedContainer, error) {
	rc, ok := m[ip]
	if !ok {
		return ResolvedContainer{}, ErrNoContainerForPeerIP
	}
	return rc, nil
}

func TestIdentityInterceptorUnit(t *testing.T) {
	if _, _, err := IdentityInterceptor(nil, nil); err == nil {
		t.Fatal("nil lookup accepted")
	}
	p := newUnitPKI(t)
	rc := rcFor(t, 1, "p", "a")
	var buf bytes.Buffer
	unary, stream, err := IdentityInterceptor(mapLookup{netip.MustParseAddr("10.0.0.2"): rc}, logger.New(&buf, "debug", "t"))
	if err != nil {
		t.Fatal(err)
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/m"}
	var got ResolvedContainer
	var ok bool
	h := func(ctx context.Context, _ any) (any, error) {
		got, ok = ResolvedContainerFromContext(ctx)
		return nil, nil
	}

	// Success, including an IPv4-mapped IPv6 peer address.
	if _, err := unary(tlsPeerCtx(context.Background(), p.leaf(t, rc), "::ffff:10.0.0.2"), nil, info, h); err != nil || !ok || got != rc {
		t.Fatalf("unary: %v ok=%v got=%+v", err, ok, got)
	}
	// Stream: handler sees the resolved container on the wrapped stream.
	ok = false
	err = stream(nil, streamWithCtx{ctx: tlsPeerCtx(context.Background(), p.leaf(t, rc), "10.0.0.2")}, &grpc.StreamServerInfo{FullMethod: "/s"},
		func(_ any, ss grpc.ServerStream) error {
			got, ok = ResolvedContainerFromContext(ss.Context())
			return nil
		})
	if err != nil || !ok || got != rc {
		t.Fatalf("stream: %v ok=%v", err, ok)
	}
	// Rejections: generic envelope, distinct events.
	for name, tc := range map[string]struct {
		ctx   context.Context
		event string
	}{
		"no peer":           {context.Background(), evIdentityNoPeerCert},
		"no cert":           {tlsPeerCtx(context.Background(), nil, "10.0.0.2"), evIdentityNoPeerCert},
		"unknown ip":        {tlsPeerCtx(context.Background(), p.leaf(t, rc), "10.0.0.3"), evIdentityPeerUnknown},
		"san":               {tlsPeerCtx(context.Background(), p.leaf(t, rcFor(t, 1, "p", "b")), "10.0.0.2"), evIdentitySANMismatch},
		"global vs project": {tlsPeerCtx(context.Background(), p.leaf(t, rcFor(t, 1, "", "a")), "10.0.0.2"), evIdentitySANMismatch},
	} {
		buf.Reset()
		ok = false
		_, err := unary(tc.ctx, nil, info, h)
		st, _ := status.FromError(err)
		if st.Code() != codes.PermissionDenied || st.Message() != rejectMessage || ok {
			t.Errorf("%s: err = %v, handler ran = %v", name, err, ok)
		}
		if !strings.Contains(buf.String(), `"event":"`+tc.event+`"`) {
			t.Errorf("%s: missing event %s: %s", name, tc.event, buf.String())
		}
	}
}

type streamWithCtx struct {
	grpc.ServerStream
	ctx context.Context
}

func (s streamWithCtx) Context() context.Context { return s.ctx }

func TestWithResolvedContainerZeroValue(t *testing.T) {
	ctx := context.Background()
	if WithResolvedContainer(ctx, ResolvedContainer{}) != ctx {
		t.Fatal("zero value changed ctx")
	}
	if _, ok := ResolvedContainerFromContext(ctx); ok {
		t.Fatal("ok=true on empty ctx")
	}
}
