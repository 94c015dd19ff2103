package agent_test

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/clawker/clawker/api/agent/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/token"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

func TestChainRegisterSuccessAndIdempotentRetry(t *testing.T) {
	c := newChain(t)
	c.lookup.set(resolved(t, 1, "proj", "alpha"), nil)
	leaf := c.agentLeaf(t, 1, "proj", "alpha")
	tok := c.fetchToken(t, leaf, 1, consts.ScopeRegister)
	req := &agentv1.RegisterRequest{AgentName: "alpha", Project: "proj"}
	if err := c.register(t, leaf, tok, req); err != nil {
		t.Fatalf("Register: %v\nlogs:\n%s", err, c.logs.String())
	}
	rows := c.rows(t)
	if len(rows) != 1 || rows[0].ContainerID != cid(1) || rows[0].Thumbprint != auth.Thumbprint(leaf.Cert) ||
		rows[0].AgentName.String() != "alpha" || rows[0].Project.String() != "proj" {
		t.Fatalf("rows = %+v", rows)
	}
	// Session retry after the row was written: same cert, same token.
	if err := c.register(t, leaf, tok, req); err != nil {
		t.Fatalf("idempotent retry: %v", err)
	}
	if len(c.rows(t)) != 1 || !strings.Contains(c.logs.String(), `"event":"register_idempotent"`) {
		t.Fatalf("retry changed rows or was not logged as idempotent")
	}
}

// TestChainRejections is the identity gate's rejection table: one row per
// reason, through the real listener chain. Each row asserts the gRPC code,
// the generic message, the event= log line, and that no row was written.
func TestChainRejections(t *testing.T) {
	const (
		msgRejected = "registration rejected"
		msgAuth     = "authentication required"
		msgScope    = "permission denied"
	)
	okReq := &agentv1.RegisterRequest{AgentName: "alpha", Project: "proj"}
	type result struct {
		err     error
		preRows int
	}
	tests := []struct {
		name  string
		code  codes.Code
		msg   string // "" = TLS-layer refusal, no application message
		event string
		run   func(t *testing.T, c *chain) result
	}{
		{name: "no client cert", code: codes.Unavailable, run: func(t *testing.T, c *chain) result {
			return result{err: c.register(t, nil, "", okReq)}
		}},
		{name: "cert from another CA", code: codes.Unavailable, run: func(t *testing.T, c *chain) result {
			other, err := auth.NewCA(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			rc := resolved(t, 1, "proj", "alpha")
			l, err := other.MintAgent(rc.Project, rc.AgentName, rc.ContainerID, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return result{err: c.register(t, l, "", okReq)}
		}},
		{name: "cert without ClientAuth EKU", code: codes.Unavailable, run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				auth.AgentURN("clawker.proj.alpha").String(), auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, "", okReq)}
		}},
		{name: "missing token", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_missing", run: func(t *testing.T, c *chain) result {
			return result{err: c.register(t, c.agentLeaf(t, 1, "proj", "alpha"), "", okReq)}
		}},
		{name: "expired token", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_claims_invalid", run: func(t *testing.T, c *chain) result {
			leaf := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, leaf, 1, "")
			c.advance(token.DefaultTokenLifetime + time.Minute)
			return result{err: c.register(t, leaf, tok, okReq)}
		}},
		{name: "forged token", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_forged", run: func(t *testing.T, c *chain) result {
			leaf := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, leaf, forgeAccessToken(t, leaf, c.clock()), okReq)}
		}},
		{name: "token bound to another cert", code: codes.Unauthenticated, msg: msgAuth, event: "auth_token_unbound", run: func(t *testing.T, c *chain) result {
			first := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, first, 1, "")
			second := c.agentLeaf(t, 1, "proj", "alpha") // same identity, different key
			return result{err: c.register(t, second, tok, okReq)}
		}},
		{name: "token with wrong scope", code: codes.PermissionDenied, msg: msgScope, event: "auth_scope_insufficient", run: func(t *testing.T, c *chain) result {
			leaf := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, leaf, c.fetchToken(t, leaf, 1, "agent:self:other"), okReq)}
		}},
		{name: "wrong CN", code: codes.PermissionDenied, msg: msgRejected, event: "identity_cn_mismatch", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, "clawker-impostor", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				auth.AgentURN("clawker.proj.alpha").String(), auth.ContainerURN(cid(1)).String())
			// The token endpoint refuses this CN too (token_cn_mismatch); a
			// genuinely signed token proves the identity gate holds alone.
			return result{err: c.register(t, l, signAccessToken(t, c.tokenKey, l, c.clock()), okReq)}
		}},
		{name: "missing agent SAN", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_invalid", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), okReq)}
		}},
		{name: "malformed agent SAN", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_invalid", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				"urn:clawker:agent:clawker.proj.Alpha.x", auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), okReq)}
		}},
		{name: "two agent SANs", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_invalid", run: func(t *testing.T, c *chain) result {
			l := c.customLeaf(t, consts.ContainerClawkerd, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				auth.AgentURN("clawker.proj.alpha").String(), auth.AgentURN("clawker.proj.root").String(), auth.ContainerURN(cid(1)).String())
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), okReq)}
		}},
		{name: "agent SAN disagrees with labels", code: codes.PermissionDenied, msg: msgRejected, event: "identity_san_mismatch", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "mallory")
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), &agentv1.RegisterRequest{AgentName: "mallory", Project: "proj"})}
		}},
		{name: "peer IP with no container", code: codes.PermissionDenied, msg: msgRejected, event: "identity_peer_unresolved", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, l, 1, "")
			c.lookup.set(agent.ResolvedContainer{}, agent.ErrNoContainerForPeerIP)
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "two containers claim the peer IP", code: codes.PermissionDenied, msg: msgRejected, event: "identity_peer_unresolved", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, l, 1, "")
			c.lookup.set(agent.ResolvedContainer{}, fmt.Errorf("x: %w", agent.ErrAmbiguousPeerIP))
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "invalid agent label", code: codes.PermissionDenied, msg: msgRejected, event: "identity_peer_unresolved", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			tok := c.fetchToken(t, l, 1, "")
			c.lookup.set(agent.ResolvedContainer{}, fmt.Errorf("x: %w", agent.ErrInvalidAgentLabel))
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "request body disagrees with labels", code: codes.PermissionDenied, msg: msgRejected, event: "register_request_mismatch", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), &agentv1.RegisterRequest{AgentName: "beta", Project: "proj"})}
		}},
		{name: "request body malformed", code: codes.InvalidArgument, msg: "invalid request", event: "register_invalid_request", run: func(t *testing.T, c *chain) result {
			l := c.agentLeaf(t, 1, "proj", "alpha")
			return result{err: c.register(t, l, c.fetchToken(t, l, 1, ""), &agentv1.RegisterRequest{AgentName: "", Project: "proj"})}
		}},
		{name: "container SAN differs from resolved container", code: codes.PermissionDenied, msg: msgRejected, event: "register_container_san_mismatch", run: func(t *testing.T, c *chain) result {
			// The cert (and its token) belong to container 2; the peer IP
			// now resolves to container 1 with the same labels.
			c.lookup.set(resolved(t, 2, "proj", "alpha"), nil)
			l := c.agentLeaf(t, 2, "proj", "alpha")
			tok := c.fetchToken(t, l, 2, "")
			c.lookup.set(resolved(t, 1, "proj", "alpha"), nil)
			return result{err: c.register(t, l, tok, okReq)}
		}},
		{name: "replayed cert for an existing row", code: codes.PermissionDenied, msg: msgRejected, event: "register_thumbprint_replay", run: func(t *testing.T, c *chain) result {
			first := c.agentLeaf(t, 1, "proj", "alpha")
			if err := c.register(t, first, c.fetchToken(t, first, 1, ""), okReq); err != nil {
				t.Fatalf("first Register: %v", err)
			}
			second := c.agentLeaf(t, 1, "proj", "alpha")
			err := c.register(t, second, c.fetchToken(t, second, 1, ""), okReq)
			rows := c.rows(t)
			if len(rows) != 1 || rows[0].Thumbprint != auth.Thumbprint(first.Cert) {
				t.Fatalf("replay modified the row: %+v", rows)
			}
			return result{err: err, preRows: 1}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newChain(t)
			c.lookup.set(resolved(t, 1, "proj", "alpha"), nil)
			res := tt.run(t, c)
			st, ok := status.FromError(res.err)
			if res.err == nil || !ok {
				t.Fatalf("Register err = %v, want a gRPC status", res.err)
			}
			if st.Code() != tt.code {
				t.Fatalf("code = %v (%q), want %v\nlogs:\n%s", st.Code(), st.Message(), tt.code, c.logs.String())
			}
			if tt.msg != "" && st.Message() != tt.msg {
				t.Fatalf("message = %q, want the generic %q", st.Message(), tt.msg)
			}
			if tt.code == codes.Unavailable {
				// Refused in the TLS handshake: nothing above TLS ran.
				for _, ev := range []string{`"event":"auth_`, `"event":"identity_`, `"event":"register_`} {
					if strings.Contains(c.logs.String(), ev) {
						t.Fatalf("TLS-layer refusal reached the interceptors:\n%s", c.logs.String())
					}
				}
			}
			if tt.event != "" && !strings.Contains(c.logs.String(), `"event":"`+tt.event+`"`) {
				t.Fatalf("no event=%s log line:\n%s", tt.event, c.logs.String())
			}
			if n := len(c.rows(t)); n != res.preRows {
				t.Fatalf("registry has %d rows, want %d", n, res.preRows)
			}
			if strings.Contains(c.logs.String(), `"event":"agent_registered"`) && res.preRows == 0 {
				t.Fatal("a rejected request logged agent_registered")
			}
		})
	}
}
