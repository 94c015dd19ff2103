package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clawker/clawker/controlplane/peerid"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/logger"
)

// DefaultTokenLifetime is how long an access token lives when Config leaves
// it unset: long enough for one Register round trip with retries.
const DefaultTokenLifetime = 5 * time.Minute

// maxAssertionLifetime caps exp-iat of an accepted assertion, bounding how
// long its jti must be remembered.
const maxAssertionLifetime = auth.AssertionLifetime + time.Minute

const (
	grantClientCredentials = "client_credentials"
	assertionTypeJWTBearer = consts.JWTBearerAssertionType
	maxRequestBody         = 64 << 10
)

// Config configures an Issuer.
type Config struct {
	// AssertionKey is the CLI's assertion public key (ECDSA P-256). When
	// nil, AssertionKeyFile (PKIX PEM) is read instead.
	AssertionKey     crypto.PublicKey
	AssertionKeyFile string
	// SigningKey signs access tokens. nil generates a fresh P-256 key, so
	// tokens verify only within this process; the CP passes a persisted
	// key (LoadOrCreateSigningKey) so they survive a restart.
	SigningKey *ecdsa.PrivateKey
	// JTI remembers redeemed assertions; required (SQLiteJTIStore in the CP).
	JTI JTIStore
	// PeerLookup resolves the requesting peer IP to its container; the
	// assertion must name that container. Required.
	PeerLookup PeerResolver
	// Registrations lets the cert that redeemed an assertion repeat the
	// exchange until its agent is registered (see mayRepeat). nil: an
	// assertion is strictly single use.
	Registrations Registrations
	// Scopes the endpoint may grant. Default: {consts.ScopeRegister}.
	Scopes []string
	// TokenLifetime defaults to DefaultTokenLifetime.
	TokenLifetime time.Duration
	Clock         func() time.Time
	Log           *logger.Logger
}

// PeerResolver is what the issuer needs of peer identity: the container
// owning a peer IP (peerid.Index in the CP).
type PeerResolver interface {
	LookupByIP(ctx context.Context, ip netip.Addr) (peerid.Container, error)
}

// Issuer serves the token endpoint and holds the access-token signing key.
type Issuer struct {
	assertionKey  *ecdsa.PublicKey
	signer        jose.Signer
	verifier      *Verifier
	jti           JTIStore
	lookup        PeerResolver
	registrations Registrations
	scopes        []string
	lifetime      time.Duration
	clock         func() time.Time
	log           *logger.Logger
	refusals      *peerRefusals
	// prechecked counts replays refused by the read-only jti check,
	// before any signature check or Docker call.
	prechecked atomic.Uint64
}

// NewIssuer validates cfg and builds an Issuer.
func NewIssuer(cfg Config) (*Issuer, error) {
	pub := cfg.AssertionKey
	if pub == nil && cfg.AssertionKeyFile != "" {
		k, err := readPublicKeyFile(cfg.AssertionKeyFile)
		if err != nil {
			return nil, err
		}
		pub = k
	}
	ak, ok := pub.(*ecdsa.PublicKey)
	if !ok || ak.Curve != elliptic.P256() {
		return nil, errors.New("token issuer: assertion key must be an ECDSA P-256 public key")
	}
	if cfg.JTI == nil {
		return nil, errors.New("token issuer: nil jti store would allow assertion replay")
	}
	if cfg.PeerLookup == nil {
		return nil, errors.New("token issuer: nil peer lookup")
	}
	sk := cfg.SigningKey
	if sk == nil {
		var err error
		if sk, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("token issuer: generate signing key: %w", err)
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: sk}, (&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		return nil, fmt.Errorf("token issuer: signer: %w", err)
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	v, err := NewVerifier(&sk.PublicKey, clock)
	if err != nil {
		return nil, err
	}
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{consts.ScopeRegister}
	}
	life := cfg.TokenLifetime
	if life <= 0 {
		life = DefaultTokenLifetime
	}
	return &Issuer{
		assertionKey: ak, signer: signer, verifier: v, jti: cfg.JTI, lookup: cfg.PeerLookup, registrations: cfg.Registrations,
		scopes: slices.Clone(scopes), lifetime: life, clock: clock, log: logger.OrNop(cfg.Log),
		refusals: newPeerRefusals(),
	}, nil
}

// Verifier returns the verifier for the tokens this Issuer signs.
func (i *Issuer) Verifier() *Verifier { return i.verifier }

// Handler serves POST consts.TokenPath. Serve it only behind ServerTLSConfig.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(consts.TokenPath, i.serveToken)
	return mux
}

// tokenResponse is the RFC 6749 §5.1 success body.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// oauthError is the RFC 6749 §5.2 error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (i *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST required")
		return
	}
	// A peer that keeps failing is refused before any work is done.
	if i.refusals.exhausted(addrIP(r.RemoteAddr)) {
		i.logRefusal(r, "token_refusal_rate_limited", errors.New("peer exceeded its refusal budget"))
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	if err := r.ParseForm(); err != nil {
		i.reject(w, r, "token_bad_request", err, http.StatusBadRequest, "invalid_request")
		return
	}
	form := r.PostForm
	if g := form.Get("grant_type"); g != grantClientCredentials {
		i.reject(w, r, "token_unsupported_grant", fmt.Errorf("grant_type %q", g), http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	scope, ok := i.grantScope(form.Get("scope"))
	if !ok {
		i.reject(w, r, "token_invalid_scope", fmt.Errorf("scope %q", form.Get("scope")), http.StatusBadRequest, "invalid_scope")
		return
	}
	if t := form.Get("client_assertion_type"); t != assertionTypeJWTBearer {
		i.reject(w, r, "token_invalid_client", fmt.Errorf("client_assertion_type %q", t), http.StatusUnauthorized, "invalid_client")
		return
	}
	cert := peerCert(r)
	if cert == nil {
		i.reject(w, r, "token_no_client_cert", errors.New("no verified client certificate"), http.StatusUnauthorized, "invalid_client")
		return
	}
	// Defence in depth: only the clawkerd identity may hold an agent
	// token, exactly as the AgentService identity gate demands.
	if !auth.CommonNameIs(cert, consts.ContainerClawkerd) {
		i.reject(w, r, "token_cn_mismatch", fmt.Errorf("client cert CN %q", cert.Subject.CommonName), http.StatusUnauthorized, "invalid_client")
		return
	}
	// A replay costs one read-only store lookup: no ES256 verify, no
	// Docker call. The authoritative Consume below still decides.
	holder := holderOf(cert)
	if jti, seen := i.alreadyRedeemed(r.Context(), form.Get("client_assertion"), holder); seen {
		i.prechecked.Add(1)
		i.reject(w, r, "token_assertion_replayed", fmt.Errorf("jti %s already redeemed (read-only check)", jti), http.StatusUnauthorized, "invalid_client")
		return
	}
	claims, event, err := i.checkAssertion(r.Context(), form.Get("client_assertion"), cert, r.RemoteAddr)
	if err != nil {
		i.reject(w, r, event, err, http.StatusUnauthorized, "invalid_client")
		return
	}
	// Burn the jti last: an assertion stolen and presented from the wrong
	// container must not consume the legitimate container's single use.
	fresh, prior, err := i.jti.Consume(r.Context(), claims.ID, holder, claims.Expiry.Time().Add(clockSkew))
	if err != nil {
		i.log.Error().Err(err).Str("event", "token_jti_store_failed").Msg("token: jti store unavailable")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "")
		return
	}
	if !fresh {
		if !i.mayRepeat(r.Context(), prior, holder, claims.Subject) {
			i.reject(w, r, "token_assertion_replayed", fmt.Errorf("jti %s already redeemed", claims.ID), http.StatusUnauthorized, "invalid_client")
			return
		}
		// Charged like a refusal: an honest agent repeats once after a
		// lost answer, so this bounds a peer that keeps repeating.
		i.refusals.charge(addrIP(r.RemoteAddr))
		if ok, n := i.refusals.logAllowed("token_exchange_repeated", addrIP(r.RemoteAddr)); ok {
			i.log.Warn().Str("event", "token_exchange_repeated").Str("container_id", claims.Subject).Uint64("suppressed", n).
				Msg("assertion exchanged again by the cert that redeemed it; its agent is not registered yet (an answer lost to a CP crash)")
		}
	}
	tok, exp, err := i.mint(claims.Subject, scope, cert)
	if err != nil {
		i.log.Error().Err(err).Str("event", "token_sign_failed").Msg("token: signing access token failed")
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "")
		return
	}
	i.log.Info().Str("event", "token_issued").Str("container_id", claims.Subject).Str("scope", scope).
		Time("expires", exp).Msg("access token issued")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		AccessToken: tok, TokenType: "Bearer", ExpiresIn: int64(i.lifetime / time.Second), Scope: scope,
	})
}

// grantScope returns the scope to grant: the request's (every value must
// be grantable) or, when absent, all grantable scopes.
func (i *Issuer) grantScope(req string) (string, bool) {
	if strings.TrimSpace(req) == "" {
		return strings.Join(i.scopes, " "), true
	}
	for _, s := range strings.Fields(req) {
		if !slices.Contains(i.scopes, s) {
			return "", false
		}
	}
	return strings.Join(strings.Fields(req), " "), true
}

// checkAssertion verifies the client assertion and that it names the
// container the peer IP resolves to and the cert's container SAN. It
// returns the log event classifying a failure.
func (i *Issuer) checkAssertion(ctx context.Context, raw string, cert *x509.Certificate, remoteAddr string) (*auth.AssertionClaims, string, error) {
	if raw == "" {
		return nil, "token_assertion_missing", errors.New("no client_assertion")
	}
	tok, err := jwt.ParseSigned(raw, allowedAlgs)
	if err != nil {
		return nil, "token_assertion_malformed", err
	}
	var c auth.AssertionClaims
	if err := tok.Claims(i.assertionKey, &c); err != nil {
		return nil, "token_assertion_bad_signature", err
	}
	now := i.clock()
	if err := validateTimes(&c.Claims, now); err != nil {
		return nil, "token_assertion_claims_invalid", err
	}
	if c.Expiry.Time().Sub(c.IssuedAt.Time()) > maxAssertionLifetime {
		return nil, "token_assertion_claims_invalid", errors.New("assertion lifetime too long")
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      auth.AssertionIssuer,
		AnyAudience: jwt.Audience{consts.AssertionAudience},
		Time:        now,
	}, clockSkew); err != nil {
		return nil, "token_assertion_claims_invalid", err
	}
	if c.ID == "" || !auth.IsContainerID(c.Subject) || c.ContainerID != c.Subject {
		return nil, "token_assertion_claims_invalid", errors.New("jti missing or sub/container_id not one 64-hex container id")
	}
	sanID, err := auth.ContainerIDFromCert(cert)
	if err != nil || !auth.ConstantTimeEqual(sanID, c.Subject) {
		return nil, "token_assertion_cert_mismatch", fmt.Errorf("assertion container %s vs cert container SAN %q: %v", c.Subject, sanID, err)
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return nil, "token_peer_unresolved", fmt.Errorf("remote addr %q: %w", remoteAddr, err)
	}
	resolved, err := i.lookup.LookupByIP(ctx, ap.Addr().Unmap())
	if err != nil {
		return nil, "token_peer_unresolved", err
	}
	if !auth.ConstantTimeEqual(resolved.ContainerID, c.Subject) {
		return nil, "token_assertion_wrong_container", fmt.Errorf("assertion for %s presented from container %s", c.Subject, resolved.ContainerID)
	}
	return &c, "", nil
}

func (i *Issuer) mint(containerID, scope string, cert *x509.Certificate) (string, time.Time, error) {
	now := i.clock()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", time.Time{}, err
	}
	exp := now.Add(i.lifetime)
	c := AccessClaims{
		Claims: jwt.Claims{
			Issuer:    IssuerName,
			Subject:   containerID,
			Audience:  jwt.Audience{consts.TokenAudience},
			ID:        hex.EncodeToString(jti),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			Expiry:    jwt.NewNumericDate(exp),
		},
		Scope: scope,
		Cnf:   Confirmation{X5tS256: CertThumbprintS256(cert)},
	}
	s, err := jwt.Signed(i.signer).Claims(c).Serialize()
	if err != nil {
		return "", time.Time{}, err
	}
	return s, exp, nil
}

// reject logs the specific reason (throttled per peer and reason),
// charges the peer's refusal budget and answers with the generic §5.2 body.
func (i *Issuer) reject(w http.ResponseWriter, r *http.Request, event string, err error, status int, code string) {
	i.refusals.charge(addrIP(r.RemoteAddr))
	i.logRefusal(r, event, err)
	desc := ""
	if code == "invalid_client" {
		desc = "client authentication failed"
	}
	writeOAuthError(w, status, code, desc)
}

func (i *Issuer) logRefusal(r *http.Request, event string, err error) {
	if ok, n := i.refusals.logAllowed(event, addrIP(r.RemoteAddr)); ok {
		i.log.Warn().Str("event", event).Str("peer", r.RemoteAddr).Err(err).Uint64("suppressed", n).Msg("token request rejected")
	}
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(oauthError{Error: code, Description: desc})
}

func peerCert(r *http.Request) *x509.Certificate {
	return auth.VerifiedLeaf(r.TLS)
}
