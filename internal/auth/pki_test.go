package auth

import (
	"bytes"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

const testCID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func mustName(t testing.TB, s string) AgentName {
	a, err := NewAgentName(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustProject(t testing.TB, s string) ProjectSlug {
	p, err := NewProjectSlug(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMintAgentSANsAndVerify(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.MintAgent(mustProject(t, "proj"), mustName(t, "alpha"), testCID, now)
	if err != nil {
		t.Fatal(err)
	}
	if l.Cert.Subject.CommonName != consts.ContainerClawkerd {
		t.Fatalf("CN = %q", l.Cert.Subject.CommonName)
	}
	full, err := AgentFullNameFromCert(l.Cert)
	if err != nil || full != "clawker.proj.alpha" {
		t.Fatalf("AgentFullNameFromCert = %q, %v", full, err)
	}
	id, err := ContainerIDFromCert(l.Cert)
	if err != nil || id != testCID {
		t.Fatalf("ContainerIDFromCert = %q, %v", id, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := l.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Fatalf("verify for EKU %v: %v", eku, err)
		}
	}
	if _, err := ca.MintAgent(ProjectSlug{}, AgentName{}, testCID, now); err == nil {
		t.Fatal("zero agent name minted")
	}
	if _, err := ca.MintAgent(ProjectSlug{}, mustName(t, "a"), "abc", now); err == nil {
		t.Fatal("short container id minted")
	}
	cli, err := ca.MintCLI(now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("CLI cert verified for ServerAuth")
	}
}

// TestCertsPassOpenSSL checks the minted certs with the openssl CLI: they
// chain to the CA and show the SANs and EKUs the architecture spec fixes.
func TestCertsPassOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	now := time.Now()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := ca.MintAgent(mustProject(t, "proj"), mustName(t, "alpha"), testCID, now)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ca.MintControlPlane(nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.MintCLI(now)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, c *x509.Certificate) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, CertPEM(c), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caPath := write("ca.pem", ca.Cert)
	run := func(args ...string) string {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cases := []struct {
		name     string
		cert     *x509.Certificate
		purposes []string
		want     []string
	}{
		{"agent", agent.Cert, []string{"sslclient", "sslserver"}, []string{
			"CN=" + consts.ContainerClawkerd, "URI:urn:clawker:agent:clawker.proj.alpha", "URI:urn:clawker:container:" + testCID,
			"TLS Web Server Authentication", "TLS Web Client Authentication"}},
		{"cp", cp.Cert, []string{"sslclient", "sslserver"}, []string{
			"CN=" + consts.ControlPlaneCN, "DNS:" + consts.ControlPlaneCN, "IP Address:127.0.0.1",
			"TLS Web Server Authentication", "TLS Web Client Authentication"}},
		{"cli", cli.Cert, []string{"sslclient"}, []string{"CN=" + consts.CLICN, "TLS Web Client Authentication"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(c.name+".pem", c.cert)
			for _, purpose := range c.purposes {
				if out := run("verify", "-CAfile", caPath, "-purpose", purpose, p); !strings.Contains(out, p+": OK") {
					t.Fatalf("openssl verify -purpose %s: %s", purpose, out)
				}
			}
			text := strings.ReplaceAll(run("x509", "-in", p, "-noout", "-text"), " = ", "=")
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("x509 -text lacks %q:\n%s", w, text)
				}
			}
		})
	}
	// The CLI cert must not pass as a server cert; a cert from another CA
	// must not verify.
	cliPath := filepath.Join(dir, "cli.pem")
	if out, err := exec.Command(openssl, "verify", "-CAfile", caPath, "-purpose", "sslserver", cliPath).CombinedOutput(); err == nil {
		t.Fatalf("CLI cert verified as sslserver: %s", out)
	}
	other, _ := NewCA(now)
	otherPath := write("other-ca.pem", other.Cert)
	if out, err := exec.Command(openssl, "verify", "-CAfile", otherPath, filepath.Join(dir, "agent.pem")).CombinedOutput(); err == nil {
		t.Fatalf("agent cert verified against an unrelated CA: %s", out)
	}
}

func TestHomeInitIdempotent(t *testing.T) {
	h := Home{Dir: filepath.Join(t.TempDir(), "home")}
	res, err := h.Init(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 8 {
		t.Fatalf("created %v", res.Created)
	}
	for _, f := range []string{consts.CAKeyFile, consts.CPKeyFile, consts.CLIKeyFile, consts.SigningKeyFile} {
		st, err := os.Stat(h.Path(f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", f, st.Mode().Perm(), err)
		}
	}
	before, _ := os.ReadFile(h.Path(consts.CACertFile))
	res, err = h.Init(time.Now())
	if err != nil || len(res.Created) != 0 {
		t.Fatalf("second Init: %v created %v", err, res.Created)
	}
	after, _ := os.ReadFile(h.Path(consts.CACertFile))
	if !bytes.Equal(before, after) {
		t.Fatal("second Init replaced the CA")
	}
	// Half-present pair is refused, not silently replaced.
	if err := os.Remove(h.Path(consts.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Init(time.Now()); err == nil {
		t.Fatal("Init with a CA cert but no key succeeded")
	}
}
