package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/egress/egressca"
)

// An intercepted upstream is verified against the system roots plus
// Config.UpstreamCA: with the origin's CA given, a rule-conforming request
// passes and the rule's method/path constraint is enforced; without it
// the upstream is not trusted (502).
func TestInterceptUpstreamCA(t *testing.T) {
	origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "origin ", r.URL.Path) }))
	t.Cleanup(origin.Close)
	_, port, _ := net.SplitHostPort(origin.Listener.Addr().String())
	originCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: origin.Certificate().Raw})
	ca, err := egressca.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.PEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"ca.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	agentRoots := x509.NewCertPool()
	agentRoots.AddCert(ca.Certificate())
	rule := "defaults: false\nallow: [{host: example.com, intercept: true, methods: [GET], paths: [/ok]}]\n"
	status := func(f *fixture, method, path string) int {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(f.proxy),
			TLSClientConfig: &tls.Config{RootCAs: agentRoots}}}
		req, _ := http.NewRequestWithContext(context.Background(), method, "https://example.com:"+port+path, nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		name     string
		extra    []byte
		okStatus int
	}{{"with the origin's CA", originCA, http.StatusOK}, {"without it", nil, http.StatusBadGateway}} {
		f := newFixtureCfg(t, func(c *Config) {
			c.CACert, c.CAKey, c.UpstreamCA = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "key.pem"), tc.extra
		})
		f.svc.SetTrust(func(string) bool { return true })
		if _, err := f.svc.Reload("proj", []byte(rule), "test"); err != nil {
			t.Fatal(err)
		}
		if got := status(f, "GET", "/ok/x"); got != tc.okStatus {
			t.Errorf("%s: GET /ok/x = %d, want %d", tc.name, got, tc.okStatus)
		}
		if got := status(f, "POST", "/ok/x"); got != http.StatusForbidden {
			t.Errorf("%s: POST /ok/x = %d, want 403", tc.name, got)
		}
		if got := status(f, "GET", "/other"); got != http.StatusForbidden {
			t.Errorf("%s: GET /other = %d, want 403", tc.name, got)
		}
	}
	if _, err := upstreamRoots([]byte("no pem here")); err == nil || !strings.Contains(err.Error(), "upstream CA") {
		t.Fatalf("garbage upstream CA accepted: %v", err)
	}
}
