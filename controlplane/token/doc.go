// Package token is the control plane's OAuth2 token endpoint and the gRPC
// AuthInterceptor that checks the tokens it issues.
//
// The endpoint implements the client-credentials grant with an RFC 7523
// jwt-bearer client assertion signed by the CLI (the CP holds only the
// public key). Assertions are single use (jti persisted in sqlite until
// expiry, so a CP restart does not reopen a replay window) and must name
// the container the presenting peer IP resolves to. Access tokens are
// CP-signed ES256 JWTs, minutes long, scope-limited, and bound to the mTLS
// client cert (cnf.x5t#S256, RFC 8705).
//
// It owns no listener: the daemon package serves Handler on the token port
// and chains AuthInterceptor before agent.IdentityInterceptor on the agent
// listener. It must not touch the agent registry.
package token
