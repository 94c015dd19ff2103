// Command tokenprobe replays an agent's bootstrap assertion against the CP
// token endpoint from inside the agent container (the soak suite copies it
// in and runs it through clawker exec). It prints the HTTP status and body
// and exits 0 only when a token was issued, so the suite can prove that a
// used assertion stays refused, across CP crashes too.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

func main() {
	os.Exit(run())
}

func run() int {
	dir := consts.BootstrapDir
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			fmt.Fprintln(os.Stderr, "tokenprobe:", err)
			os.Exit(2)
		}
		return b
	}
	cert, err := tls.X509KeyPair(read(consts.BootstrapCert), read(consts.BootstrapKey))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenprobe: key pair:", err)
		return 2
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(read(consts.BootstrapCA)) {
		fmt.Fprintln(os.Stderr, "tokenprobe: no CA in ca.pem")
		return 2
	}
	// clawkerd deletes its bootstrap assertion once used, so a test hands
	// the one to replay by path.
	var assertion []byte
	if p := os.Getenv("TOKENPROBE_ASSERTION"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tokenprobe:", err)
			return 2
		}
		assertion = b
	} else {
		assertion = read(consts.BootstrapAssert)
	}
	target := os.Getenv(consts.EnvCPTokenURL)
	if target == "" {
		target = fmt.Sprintf("https://%s:%d%s", consts.ControlPlaneContainer, consts.PortToken, consts.TokenPath)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: consts.ControlPlaneCN, MinVersion: tls.VersionTLS12,
	}}}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {"clawkerd"},
		"scope":                 {consts.ScopeRegister},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {strings.TrimSpace(string(assertion))},
	}
	res, err := client.PostForm(target, form)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenprobe: post:", err)
		return 2
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	fmt.Printf("status %d\n%s\n", res.StatusCode, body)
	if res.StatusCode == http.StatusOK {
		return 0
	}
	return 1
}
