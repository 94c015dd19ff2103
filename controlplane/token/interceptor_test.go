package token

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

func peerCtx(leaf *auth.Leaf, ca *auth.CA, authz ...string) context.Context {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 9, 0, 2), Port: 4000}}
	if leaf != nil {
		p.AuthInfo = credentials.TLSInfo{State: tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{leaf.Cert},
			VerifiedChains:   [][]*x509.Certificate{{leaf.Cert, ca.Cert}},
		}}
	}
	ctx := peer.NewContext(context.Background(), p)
	if len(authz) > 0 {
		md := metadata.MD{}
		for _, a := range authz {
			md.Append("authorization", a)
		}
		ctx = metadata.NewIncomingContext(ctx, md)
	}
	return ctx
}

func (f *tokenFixture) issue(t *testing.T) string {
	t.Helper()
	w := f.post(postOpts{leaf: f.leaf, form: f.form(f.assertion(t, 1))})
	var resp tokenResponse
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &resp) != nil {
		t.Fatalf("issue: %d %s", w.Code, w.Body)
	}
	return resp.AccessToken
}

func TestAuthInterceptor(t *testing.T) {
	f := newTokenFixture(t, nil)
	tok := f.issue(t)
	scopes := map[string]string{consts.RegisterMethod: consts.ScopeRegister, "/x.Y/Other": "agent:self:other"}
	unary, stream, err := AuthInterceptor(f.iss.Verifier(), scopes, logger.New(f.logs, "debug", "test"))
	if err != nil {
		t.Fatal(err)
	}
	scopes[consts.RegisterMethod] = "mutated" // the interceptor must hold its own copy
	called := false
	h := func(ctx context.Context, req any) (any, error) { called = true; return "ok", nil }

	tests := []struct {
		name   string
		ctx    context.Context
		method string
		code   codes.Code
		event  string
	}{
		{"ok", peerCtx(f.leaf, f.ca, "Bearer "+tok), consts.RegisterMethod, codes.OK, ""},
		{"lowercase scheme ok", peerCtx(f.leaf, f.ca, "bearer "+tok), consts.RegisterMethod, codes.OK, ""},
		{"unmapped method", peerCtx(f.leaf, f.ca, "Bearer "+tok), "/clawker.agent.v1.AgentService/Unmapped", codes.Unauthenticated, "auth_method_unmapped"},
		{"no metadata", peerCtx(f.leaf, f.ca), consts.RegisterMethod, codes.Unauthenticated, "auth_token_missing"},
		{"basic scheme", peerCtx(f.leaf, f.ca, "Basic "+tok), consts.RegisterMethod, codes.Unauthenticated, "auth_token_missing"},
		{"two authorization values", peerCtx(f.leaf, f.ca, "Bearer "+tok, "Bearer "+tok), consts.RegisterMethod, codes.Unauthenticated, "auth_token_missing"},
		{"no peer cert", peerCtx(nil, f.ca, "Bearer "+tok), consts.RegisterMethod, codes.Unauthenticated, "auth_token_unbound"},
		{"other cert", peerCtx(f.agentLeaf(t, 1), f.ca, "Bearer "+tok), consts.RegisterMethod, codes.Unauthenticated, "auth_token_unbound"},
		{"tampered token", peerCtx(f.leaf, f.ca, "Bearer "+tok[:len(tok)-4]+"AAAA"), consts.RegisterMethod, codes.Unauthenticated, "auth_token_forged"},
		{"wrong scope", peerCtx(f.leaf, f.ca, "Bearer "+tok), "/x.Y/Other", codes.PermissionDenied, "auth_scope_insufficient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called = false
			_, err := unary(tt.ctx, nil, &grpc.UnaryServerInfo{FullMethod: tt.method}, h)
			if status.Code(err) != tt.code {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.code)
			}
			if called != (tt.code == codes.OK) {
				t.Fatalf("handler called = %v", called)
			}
			if tt.event != "" && !strings.Contains(f.logs.String(), `"event":"`+tt.event+`"`) {
				t.Fatalf("missing event %s", tt.event)
			}
			// The stream interceptor applies the same gate.
			serr := stream(nil, fakeStream{ctx: tt.ctx}, &grpc.StreamServerInfo{FullMethod: tt.method}, func(any, grpc.ServerStream) error { return nil })
			if status.Code(serr) != tt.code {
				t.Fatalf("stream code = %v, want %v", status.Code(serr), tt.code)
			}
		})
	}
	if _, _, err := AuthInterceptor(nil, scopes, nil); err == nil {
		t.Fatal("nil verifier accepted")
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }

func TestServerTLSConfig(t *testing.T) {
	if _, err := ServerTLSConfig(tls.Certificate{Certificate: [][]byte{{1}}}, nil); err == nil {
		t.Fatal("nil pool accepted")
	}
	cfg, err := ServerTLSConfig(tls.Certificate{Certificate: [][]byte{{1}}}, x509.NewCertPool())
	if err != nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.MinVersion != tls.VersionTLS13 {
		t.Fatalf("cfg = %+v, %v", cfg, err)
	}
}
