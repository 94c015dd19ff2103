package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
)

// TestHostilePeerMatrix runs every hostile-peer attack of issue 7 against
// one real CP and real agent containers: attackers are processes inside
// containers on clawker-net (a stranger container, a real agent
// container, an impostor carrying a removed agent's labels) and the test
// process itself on the host (against the admin API published on
// 127.0.0.1). Each attack must be refused with its gate's one generic
// error, leave its classifying event in the CP log, write no registry row
// (admin ListAgents before/after) and run nothing (marker files absent).
// Runtime: about a minute (one CP, four containers, ~45 docker execs).
func TestHostilePeerMatrix(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	home := auth.Home{Dir: e.home}
	ca, err := home.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := home.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	signingPub, err := os.ReadFile(home.Path(consts.SigningPubFile))
	if err != nil {
		t.Fatal(err)
	}
	cpCert, err := auth.ReadCertFile(home.Path(consts.CPCertFile))
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := auth.ReadCertFile(home.Path(consts.CLICertFile))
	if err != nil {
		t.Fatal(err)
	}
	cliKey, err := auth.ReadECKeyFile(home.Path(consts.CLIKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPool := x509.NewCertPool()
	caPool.AddCert(ca.Cert)
	addr := adminAddr(t, e)
	admin := adminClient(t, addr, caPool, tlsCert(t, &auth.Leaf{Cert: cliCert, Key: cliKey}))

	const project = "hp"
	alice := strings.TrimSpace(e.must("run", "-d", "--project", project, "--agent", "alice", agentImage, "sleep", "3600").stdout)
	bob := strings.TrimSpace(e.must("run", "-d", "--project", project, "--agent", "bob", agentImage, "sleep", "3600").stdout)
	eventually(t, 90*time.Second, "alice and bob registered", func() error {
		rows := e.agents()
		for _, id := range []string{alice, bob} {
			if r, ok := findAgent(rows, id); !ok || !r.Registered || r.Session != "connected" {
				return fmt.Errorf("%s: %+v", id, r)
			}
		}
		return nil
	})
	stranger := startHostile(t, "clawker-e2e-stranger", nil)
	// Agents are alone with the CP on their own networks: the stranger
	// is put on alice's and bob's so the clawkerd TLS gates stay tested.
	joinAgentNet(t, stranger, project, "alice", false)
	joinAgentNet(t, stranger, project, "bob", false)
	bin := buildAttacker(t)
	for _, id := range []string{alice, bob, stranger} {
		plantAttacker(t, id, bin)
	}

	// Material an attacker could plausibly hold, and forgeries.
	aliceLeaf := &auth.Leaf{}
	if aliceLeaf.Cert, err = auth.ParseCertPEM(containerFile(t, alice, "/run/clawker/bootstrap/"+consts.BootstrapCert)); err != nil {
		t.Fatal(err)
	}
	if aliceLeaf.Key, err = auth.ParseECKeyPEM(containerFile(t, alice, "/run/clawker/bootstrap/"+consts.BootstrapKey)); err != nil {
		t.Fatal(err)
	}
	bobLeaf := &auth.Leaf{}
	if bobLeaf.Cert, err = auth.ParseCertPEM(containerFile(t, bob, "/run/clawker/bootstrap/"+consts.BootstrapCert)); err != nil {
		t.Fatal(err)
	}
	if bobLeaf.Key, err = auth.ParseECKeyPEM(containerFile(t, bob, "/run/clawker/bootstrap/"+consts.BootstrapKey)); err != nil {
		t.Fatal(err)
	}
	aliceM, bobM := leafMaterial(t, aliceLeaf), leafMaterial(t, bobLeaf)
	now := time.Now()
	bobFull := auth.AgentFullName(mustSlug(t, project), mustName(t, "bob"))
	foreignCA, err := auth.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	serverOnly := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	attackerKey := newKey(t)
	fresh := func(containerID string) string {
		a, err := auth.MintAssertion(signer, containerID, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	cpAgent := fmt.Sprintf("%s:%d", consts.ControlPlaneContainer, consts.PortAgent)
	tokenURL := fmt.Sprintf("https://%s:%d%s", consts.ControlPlaneContainer, consts.PortToken, consts.TokenPath)
	bobSession := fmt.Sprintf("%s:%d", containerName(t, bob), consts.PortSession)
	register := func(from string, m material, extra ...string) func(string) outcome {
		return func(name string) outcome {
			args := append([]string{"-mode", "register", "-target", cpAgent, "-project", project, "-agent", "bob"}, extra...)
			return runAttacker(t, from, name, m, args...)
		}
	}
	registerWithToken := func(from string, m material) func(string) outcome {
		return register(from, m, "-token-url", tokenURL)
	}
	tokenReq := func(from string, m material, extra ...string) func(string) outcome {
		return func(name string) outcome {
			return runAttacker(t, from, name, m, append([]string{"-mode", "token", "-target", tokenURL}, extra...)...)
		}
	}
	session := func(from string, m material) func(string) outcome {
		return func(name string) outcome {
			return runAttacker(t, from, name, m, "-mode", "session", "-target", bobSession, "-marker", "/tmp/hostile-"+name)
		}
	}

	// Legit bearer tokens the attacker steals or tampers with: fetched by
	// the real agents from their own containers.
	fetch := func(from string, m material, containerID string) string {
		o := runAttacker(t, from, "legit-token-"+containerID[:12], m.with("", fresh(containerID)), "-mode", "token", "-target", tokenURL)
		if !o.OK || o.Token == "" {
			t.Fatalf("legit token fetch from %s refused: %+v", containerID[:12], o)
		}
		return o.Token
	}
	bobToken := fetch(bob, bobM, bob)
	aliceToken := fetch(alice, aliceM, alice)
	// clawkerd deletes its assertion once exchanged: the used one to
	// replay is one the test exchanged itself from alice's container.
	aliceUsedAssertion := fresh(alice)
	if o := runAttacker(t, alice, "legit-exchange", aliceM.with("", aliceUsedAssertion), "-mode", "token", "-target", tokenURL); !o.OK {
		t.Fatalf("legit exchange from alice refused: %+v", o)
	}

	tlsRefusal := func(name, surface, from, event string, run func(string) outcome) hostileAttack {
		return hostileAttack{name: name, surface: surface, from: from, event: event, run: run, want: refusedAtTLS}
	}
	identity := func(name, from, event string, run func(string) outcome) hostileAttack {
		return hostileAttack{name: name, surface: "agent-api", from: from, event: event, run: run, want: refusedRPC("PermissionDenied", genericIdentity)}
	}
	authn := func(name, from, event string, run func(string) outcome) hostileAttack {
		return hostileAttack{name: name, surface: "agent-api", from: from, event: event, run: run, want: refusedRPC("Unauthenticated", genericUnauth)}
	}
	oauth := func(name, from, event string, run func(string) outcome) hostileAttack {
		return hostileAttack{name: name, surface: "token", from: from, event: event, run: run, want: refusedOAuth(401, genericOAuth)}
	}

	expired := leafMaterial(t, mint(t, ca, agentSpec(consts.ContainerClawkerd, bobFull, bob), now.Add(-48*time.Hour)))
	notYet := leafMaterial(t, mint(t, ca, agentSpec(consts.ContainerClawkerd, bobFull, bob), now.Add(48*time.Hour)))
	foreign := leafMaterial(t, mint(t, &auth.CA{Cert: foreignCA.Cert, Key: foreignCA.Key}, agentSpec(consts.ContainerClawkerd, bobFull, bob), now))
	selfSigned := leafMaterial(t, selfSignedCopy(t, bobLeaf.Cert))
	serverOnlyM := leafMaterial(t, mint(t, ca, agentSpec(consts.ContainerClawkerd, bobFull, bob, serverOnly...), now))
	wrongCN := leafMaterial(t, mint(t, ca, agentSpec("clawker-evil", bobFull, bob), now))
	otherProject := leafMaterial(t, mint(t, ca, agentSpec(consts.ContainerClawkerd, "clawker.other.bob", bob), now))
	cpSpec := func(ekus ...x509.ExtKeyUsage) auth.LeafSpec {
		if len(ekus) == 0 {
			ekus = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		}
		return auth.LeafSpec{CommonName: consts.ControlPlaneCN, EKUs: ekus, Lifetime: time.Hour}
	}

	attacks := []hostileAttack{
		// Agent API (7444): the mTLS layer.
		tlsRefusal("cp-no-cert", "agent-api", "stranger", "", register(stranger, material{})),
		tlsRefusal("cp-foreign-ca", "agent-api", "bob", "", register(bob, foreign.with(bobToken, ""))),
		tlsRefusal("cp-self-signed-copy", "agent-api", "bob", "", register(bob, selfSigned.with(bobToken, ""))),
		tlsRefusal("cp-expired-cert", "agent-api", "bob", "", register(bob, expired.with(bobToken, ""))),
		tlsRefusal("cp-not-yet-valid-cert", "agent-api", "bob", "", register(bob, notYet.with(bobToken, ""))),
		tlsRefusal("cp-serverauth-only-eku", "agent-api", "bob", "", register(bob, serverOnlyM.with(bobToken, ""))),
		// Token endpoint (7445): the mTLS layer (net/http logs the refusal).
		tlsRefusal("token-no-cert", "token", "stranger", "token_http_error", tokenReq(stranger, material{}.with("", fresh(bob)))),
		tlsRefusal("token-foreign-ca", "token", "bob", "token_http_error", tokenReq(bob, foreign.with("", fresh(bob)))),
		tlsRefusal("token-expired-cert", "token", "bob", "token_http_error", tokenReq(bob, expired.with("", fresh(bob)))),
		tlsRefusal("token-serverauth-only-eku", "token", "bob", "token_http_error", tokenReq(bob, serverOnlyM.with("", fresh(bob)))),
		// Agent API: bearer tokens (bob's own cert, from bob's container).
		authn("token-missing", "bob", "auth_token_missing", register(bob, bobM)),
		authn("token-forged-alg-none", "bob", "auth_token_forged", register(bob, bobM.with(resign(t, bobToken, "none", nil), ""))),
		authn("token-forged-hs256-public-key", "bob", "auth_token_forged", register(bob, bobM.with(resign(t, bobToken, "HS256", hs256(signingPub)), ""))),
		authn("token-forged-wrong-key", "bob", "auth_token_forged", register(bob, bobM.with(resign(t, bobToken, "ES256", es256(t, attackerKey)), ""))),
		authn("token-for-another-cert", "bob", "auth_token_unbound", register(bob, bobM.with(aliceToken, ""))),
		// Agent API: identity gate with a token the endpoint really issued.
		// A wrong-CN cert gets no token of its own, and a token of bob's is
		// bound to bob's cert; the gate's own CN pin (identity_cn_mismatch)
		// is defence in depth, proven in-process (controlplane/agent).
		oauth("cert-wrong-cn-token", "bob", "token_cn_mismatch", tokenReq(bob, wrongCN.with("", fresh(bob)))),
		authn("cert-wrong-cn-register", "bob", "auth_token_unbound", register(bob, wrongCN.with(bobToken, ""))),
		identity("cert-san-other-project", "bob", "identity_san_mismatch", registerWithToken(bob, otherProject.with("", fresh(bob)))),
		identity("stolen-cert-and-token-from-another-container", "bob", "identity_san_mismatch", register(bob, aliceM.with(aliceToken, ""))),
		identity("stranger-with-stolen-cert-and-token", "stranger", "identity_peer_unresolved", register(stranger, aliceM.with(aliceToken, ""))),
		// Token endpoint: assertions and scopes.
		oauth("assertion-missing", "bob", "token_assertion_missing", tokenReq(bob, bobM)),
		oauth("assertion-expired", "bob", "token_assertion_claims_invalid", tokenReq(bob, bobM.with("", mintAssertionAt(t, signer, bob, now.Add(-3*time.Hour))))),
		oauth("assertion-forged-alg-none", "bob", "token_assertion_malformed", tokenReq(bob, bobM.with("", resign(t, fresh(bob), "none", nil)))),
		oauth("assertion-forged-hs256-public-key", "bob", "token_assertion_malformed", tokenReq(bob, bobM.with("", resign(t, fresh(bob), "HS256", hs256(signingPub))))),
		oauth("assertion-forged-wrong-key", "bob", "token_assertion_bad_signature", tokenReq(bob, bobM.with("", resign(t, fresh(bob), "ES256", es256(t, attackerKey))))),
		oauth("assertion-used-replayed", "alice", "token_assertion_replayed", tokenReq(alice, aliceM.with("", aliceUsedAssertion))),
		oauth("assertion-for-another-container", "bob", "token_assertion_cert_mismatch", tokenReq(bob, bobM.with("", fresh(alice)))),
		oauth("stolen-cert-and-assertion-from-another-container", "bob", "token_assertion_wrong_container", tokenReq(bob, aliceM.with("", fresh(alice)))),
		{name: "token-for-another-scope", surface: "token", from: "bob", event: "token_invalid_scope",
			run: tokenReq(bob, bobM.with("", fresh(bob)), "-scope", "agent:admin"), want: refusedOAuth(400, `{"error":"invalid_scope"}`)},
		// Agent API: hostile messages.
		{name: "grpc-oversized-message", surface: "agent-api", from: "bob", layer: "(gRPC framing, before auth)", run: register(bob, bobM.with(bobToken, ""), "-pad", "5000000"),
			want: refusedRPC("ResourceExhausted", "")},
		{name: "grpc-malformed-message", surface: "agent-api", from: "bob", layer: "(gRPC decode, before auth)", run: func(name string) outcome {
			return runAttacker(t, bob, name, bobM.with(bobToken, ""), "-mode", "raw", "-target", cpAgent)
		}, want: refusedRPC("Internal", "")},
		// clawkerd Session (7700): only the CP may open one.
		tlsRefusal("clawkerd-no-cert", "clawkerd", "stranger", "", session(stranger, material{})),
		tlsRefusal("clawkerd-foreign-ca", "clawkerd", "stranger", "", session(stranger, leafMaterial(t, mint(t, foreignCA, cpSpec(), now)))),
		tlsRefusal("clawkerd-self-signed-cp-copy", "clawkerd", "stranger", "", session(stranger, leafMaterial(t, selfSignedCopy(t, cpCert)))),
		tlsRefusal("clawkerd-expired-cp-cert", "clawkerd", "stranger", "", session(stranger, leafMaterial(t, mint(t, ca, cpSpec(), now.Add(-48*time.Hour))))),
		tlsRefusal("clawkerd-serverauth-only-cp-cert", "clawkerd", "stranger", "", session(stranger, leafMaterial(t, mint(t, ca, cpSpec(serverOnly...), now)))),
		tlsRefusal("clawkerd-wrong-cn", "clawkerd", "stranger", "", session(stranger, wrongCN)),
		tlsRefusal("clawkerd-cli-cert", "clawkerd", "stranger", "", session(stranger, leafMaterial(t, &auth.Leaf{Cert: cliCert, Key: cliKey}))),
	}
	attacks = append(attacks, dosAttacks(t, e, stranger, alice, aliceM, aliceUsedAssertion)...)
	attacks = append(attacks, netIsolationAttacks(t, e, project, alice, bob, stranger)...)
	attacks = append(attacks, egressAttacks(t, e, project, alice, stranger)...)
	// Admin API (127.0.0.1) from the host: only the CLI cert is admitted.
	adminCerts := []struct {
		name string
		leaf *auth.Leaf
	}{
		{"admin-no-cert", nil},
		{"admin-foreign-ca", mint(t, foreignCA, auth.LeafSpec{CommonName: consts.CLICN, EKUs: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, now)},
		{"admin-self-signed-cli-copy", selfSignedCopy(t, cliCert)},
		{"admin-expired-cli-cert", mint(t, ca, auth.LeafSpec{CommonName: consts.CLICN, EKUs: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Lifetime: time.Hour}, now.Add(-48*time.Hour))},
		{"admin-not-yet-valid-cli-cert", mint(t, ca, auth.LeafSpec{CommonName: consts.CLICN, EKUs: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, now.Add(48*time.Hour))},
		{"admin-serverauth-only-cli-cert", mint(t, ca, auth.LeafSpec{CommonName: consts.CLICN, EKUs: serverOnly}, now)},
		{"admin-agent-cert", aliceLeaf},
		{"admin-cp-cert", mint(t, ca, cpSpec(), now)},
	}
	for _, ac := range adminCerts {
		var certs []tls.Certificate
		if ac.leaf != nil {
			certs = tlsCert(t, ac.leaf)
		}
		attacks = append(attacks, tlsRefusal(ac.name, "admin", "host", "", func(name string) outcome {
			return adminAttack(t, adminClient(t, addr, caPool, certs), name, bob)
		}))
	}

	attacks = append(attacks, trustGateAttacks(t, e, bin, project, bobLeaf)...)
	m := newMatrix(t, admin, bob)
	attacks = append(attacks, rootStepAndTerminalAttacks(t, e, m)...)
	for _, a := range attacks {
		m.try(a)
	}

	// Controls: the same paths with the right credentials succeed, so
	// every refusal above is the gate's doing, not an unreachable target,
	// and the marker check can see a command that did run.
	cpLeaf := &auth.Leaf{}
	if cpLeaf.Cert, err = auth.ReadCertFile(home.Path(consts.CPCertFile)); err != nil {
		t.Fatal(err)
	}
	if cpLeaf.Key, err = auth.ReadECKeyFile(home.Path(consts.CPKeyFile)); err != nil {
		t.Fatal(err)
	}
	if o := registerWithToken(bob, bobM.with("", fresh(bob)))("control-register"); !o.OK {
		t.Errorf("control: bob's own idempotent Register over the same path refused: %+v", o)
	}
	aliceSession := fmt.Sprintf("%s:%d", containerName(t, alice), consts.PortSession)
	o := runAttacker(t, stranger, "control-session", leafMaterial(t, cpLeaf), "-mode", "session", "-target", aliceSession, "-marker", "/tmp/hostile-control")
	if !o.OK || !pathExists(t, alice, "/tmp/hostile-control") {
		t.Errorf("control: a Session with the CP's own cert did not run its command: %+v", o)
	}
	if o := adminAttack(t, admin, "control-admin", bob); !o.OK || !pathExists(t, bob, "/tmp/hostile-control-admin") {
		t.Errorf("control: admin Exec with the CLI cert did not run: ok=%v %s", o.OK, o)
	}
	m.rebaseline()

	// The replay after removal: alice is removed, and a container made
	// outside clawker takes her labels (no cert, no clawkerd). Her stolen
	// cert and still-valid token are replayed from it.
	e.must("rm", "-f", "--project", project, "alice")
	eventually(t, 30*time.Second, "alice's row evicted", func() error {
		if r, ok := findAgent(e.agents(), alice); ok && r.Registered {
			return fmt.Errorf("still registered: %+v", r)
		}
		return nil
	})
	impostor := startHostile(t, "clawker-e2e-impostor", map[string]string{
		consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: "alice", consts.LabelProject: project, consts.LabelManaged: "true",
	})
	plantAttacker(t, impostor, bin)
	// It also wins alice's network name and address (a Docker user can).
	impNet := joinAgentNet(t, impostor, project, "alice", true)
	impCP := netip.AddrPortFrom(impNet.CPAddr(), consts.PortAgent).String()
	impToken := fmt.Sprintf("https://%s%s", netip.AddrPortFrom(impNet.CPAddr(), consts.PortToken), consts.TokenPath)
	m.rebaseline()
	for _, a := range []hostileAttack{
		tlsRefusal("impostor-labels-no-cert", "agent-api", "impostor", "", register(impostor, material{}, "-target", impCP)),
		tlsRefusal("impostor-labels-no-cert-token", "token", "impostor", "token_http_error", tokenReq(impostor, material{}.with("", fresh(alice)), "-target", impToken)),
		identity("replayed-cert-and-token-after-rm", "impostor", "register_container_san_mismatch", func(name string) outcome {
			return runAttacker(t, impostor, name, aliceM.with(aliceToken, ""), "-mode", "register", "-target", impCP, "-project", project, "-agent", "alice")
		}),
		oauth("replayed-cert-fresh-assertion-after-rm", "impostor", "token_assertion_wrong_container", tokenReq(impostor, aliceM.with("", fresh(alice)), "-target", impToken)),
	} {
		m.try(a)
	}
	if r, ok := findAgent(e.agents(), impostor); ok && r.Registered {
		t.Errorf("impostor holds a registry row: %+v", r)
	}

	// The honest agent was never disturbed: same row, Session still up.
	if r, ok := findAgent(e.agents(), bob); !ok || !r.Registered || r.Session != "connected" || !r.Trusted {
		t.Errorf("bob after the matrix: %+v", r)
	}
	m.checkEvents(e)
	m.report()
}
