package proxyconnect

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/egress/gateway"
	"github.com/clawker/clawker/internal/egress/policy"
	"github.com/clawker/clawker/internal/logger"
)

type trustAll struct{}

func (trustAll) Attribute(context.Context, netip.Addr) (gateway.Agent, bool, error) {
	return gateway.Agent{ContainerID: "c0ffee", Name: "clawker.p.dev", Project: "p"}, true, nil
}

// sshLike is a server-first TCP service on loopback: a banner, then it
// echoes each line upper-cased until the client half-closes, then says bye.
func sshLike(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "SSH-2.0-fake\r\n")
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintln(c, strings.ToUpper(sc.Text()))
				}
				fmt.Fprintln(c, "bye")
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// realGateway is the clawker egress proxy on loopback allowing only
// git.test on port, with git.test and evil.test resolving to loopback.
func realGateway(t *testing.T, port int) string {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf("defaults: false\nallow:\n  - {host: git.test, ports: [%d]}\n", port)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	g, err := gateway.New(gateway.Config{Attributor: trustAll{},
		Policies: gateway.PolicyFunc(func(string) *policy.Matcher { return m }),
		Resolver: gateway.StaticZone{"git.test": lo, "evil.test": lo}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gateway.NewProxy(g))
	t.Cleanup(srv.Close)
	return srv.URL
}

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func run(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb logger.SyncBuffer // written by Run's goroutines
	code := Run(ctx, args, strings.NewReader(stdin), &out, &errb, envOf(env))
	return code, out.String(), errb.String()
}

// An allowed host:port is tunnelled through the real gateway: the
// server's banner arrives (server first), stdin reaches the server, its
// half-close is seen, and the remote's close ends the command with 0.
func TestTunnelThroughGateway(t *testing.T) {
	port := sshLike(t)
	proxy := realGateway(t, port)
	for _, env := range []map[string]string{
		{"HTTPS_PROXY": proxy},
		{"https_proxy": proxy},
		{"HTTP_PROXY": proxy}, // a CONNECT proxy either way
	} {
		code, out, errs := run(t, env, "hello\nworld\n", "git.test", strconv.Itoa(port))
		if code != 0 || out != "SSH-2.0-fake\r\nHELLO\nWORLD\nbye\n" {
			t.Fatalf("env %v: exit %d, out %q, stderr %q", env, code, out, errs)
		}
	}
}

// A host or port the policy does not allow fails with the gateway's
// refusal on stderr and exit 1; nothing reaches stdout.
func TestRefusalIsShown(t *testing.T) {
	port := sshLike(t)
	proxy := realGateway(t, port)
	for _, target := range [][2]string{{"evil.test", strconv.Itoa(port)}, {"git.test", "22"}, {"192.0.2.1", "22"}} {
		code, out, errs := run(t, map[string]string{"HTTPS_PROXY": proxy}, "hello\n", target[0], target[1])
		if code != 1 || out != "" || !strings.Contains(errs, "refused the tunnel: 403 Forbidden (egress denied by clawker policy)") ||
			!strings.Contains(errs, net.JoinHostPort(target[0], target[1])) || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: exit %d, out %q, stderr %q", target, code, out, errs)
		}
	}
}

// Loopback and NO_PROXY names (the CP) are dialed directly, as every
// proxy-aware tool does; so is everything when no proxy is set.
func TestNoProxyDialsDirect(t *testing.T) {
	port := sshLike(t)
	// A proxy that must not be used: any request fails the test.
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("proxy used for %s", r.Host)
		http.Error(w, "no", http.StatusTeapot)
	}))
	defer dead.Close()
	for _, env := range []map[string]string{
		{"HTTPS_PROXY": dead.URL, "NO_PROXY": "example.com,127.0.0.1"},
		{"https_proxy": dead.URL, "no_proxy": "127.0.0.1"},
		{},
	} {
		code, out, errs := run(t, env, "x\n", "127.0.0.1", strconv.Itoa(port))
		if code != 0 || out != "SSH-2.0-fake\r\nX\nbye\n" {
			t.Errorf("env %v: exit %d, out %q, stderr %q", env, code, out, errs)
		}
	}
	// A NO_PROXY name is dialed directly (and here fails to resolve).
	code, out, errs := run(t, map[string]string{"HTTPS_PROXY": dead.URL, "NO_PROXY": ".invalid"}, "", "direct.invalid", "22")
	if code != 1 || out != "" || !strings.Contains(errs, "direct.invalid:22: dial tcp") {
		t.Errorf("NO_PROXY name: exit %d, out %q, stderr %q", code, out, errs)
	}
}

// Bad arguments and unusable proxies fail with one line and no tunnel.
func TestErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there now
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"no args", nil, nil, 2, "usage: clawkerd proxy-connect HOST PORT"},
		{"one arg", nil, []string{"git.test"}, 2, "usage:"},
		{"bad port", nil, []string{"git.test", "ssh"}, 2, `bad port "ssh"`},
		{"port 0", nil, []string{"git.test", "0"}, 2, `bad port "0"`},
		{"bad host", nil, []string{"a b", "22"}, 2, `bad host "a b"`},
		{"socks proxy", map[string]string{"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, []string{"git.test", "22"}, 1, "only http:// proxies are supported"},
		{"proxy down", map[string]string{"HTTPS_PROXY": "http://" + closed}, []string{"git.test", "22"}, 1, "egress proxy " + closed},
	}
	for _, c := range cases {
		code, out, errs := run(t, c.env, "", c.args...)
		if code != c.code || out != "" || !strings.Contains(errs, c.want) || strings.Count(errs, "\n") != 1 {
			t.Errorf("%s: exit %d, out %q, stderr %q; want exit %d and %q", c.name, code, out, errs, c.code, c.want)
		}
	}
}

// The reply and the first tunnel bytes may arrive in one segment (a
// server-first protocol through a fast proxy): those bytes are not lost.
// Credentials in the proxy URL become Proxy-Authorization.
func TestBytesAfterReplyAndProxyAuth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gotAuth := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		gotAuth <- req.Method + " " + req.Host + " " + req.Header.Get("Proxy-Authorization")
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-early\r\n")
	}()
	code, out, errs := run(t, map[string]string{"HTTPS_PROXY": "http://u:pw@" + ln.Addr().String()}, "", "[2001:db8::1]", "22")
	if code != 0 || out != "SSH-2.0-early\r\n" {
		t.Fatalf("exit %d, out %q, stderr %q", code, out, errs)
	}
	if got := <-gotAuth; got != "CONNECT [2001:db8::1]:22 Basic dTpwdw==" {
		t.Fatalf("proxy saw %q", got)
	}
}
