// Package proxyconnect is `clawkerd proxy-connect HOST PORT`: the ssh
// ProxyCommand clawker installs in every agent. Agents have no route out,
// so plain ssh (and git over ssh) reaches a host only through the egress
// gateway: this opens a CONNECT tunnel to HOST:PORT through the proxy the
// agent's environment names and relays stdin/stdout over it. It adds no
// reach of its own: the gateway decides every tunnel.
package proxyconnect

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// Timeouts bound the setup only (the proxy dial, and the gateway's
// decision plus its upstream dial); the tunnel itself may idle forever.
const (
	dialTimeout  = 15 * time.Second
	replyTimeout = 45 * time.Second
	maxReplyBody = 1 << 10
)

// Run is the subcommand: args are HOST PORT (ssh's %h %p). The exit code
// is 0 when the tunnel ran and the remote closed it, 1 when the gateway
// refused or the tunnel could not be set up, 2 on usage errors. Every
// failure is one line on stderr, which ssh shows to the user.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) != 2 {
		io.WriteString(stderr, "usage: clawkerd proxy-connect HOST PORT  (an ssh ProxyCommand, given %h and %p)\n")
		return 2
	}
	target, err := targetAddr(args[0], args[1])
	if err != nil {
		fmt.Fprintf(stderr, "clawkerd proxy-connect: %v\n", err)
		return 2
	}
	conn, rest, err := Dial(ctx, target, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "clawkerd proxy-connect: %s: %v\n", target, err)
		return 1
	}
	defer conn.Close()
	if err := splice(conn, rest, stdin, stdout); err != nil {
		fmt.Fprintf(stderr, "clawkerd proxy-connect: %s: %v\n", target, err)
		return 1
	}
	return 0
}

func targetAddr(host, port string) (string, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" || strings.ContainsAny(host, " \t\r\n/") {
		return "", fmt.Errorf("bad host %q", host)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("bad port %q", port)
	}
	return net.JoinHostPort(host, port), nil
}

// RefusedError is the gateway's answer to a CONNECT it did not allow.
type RefusedError struct {
	Status string // "403 Forbidden"
	Body   string // the gateway's generic refusal text, trimmed
}

func (e *RefusedError) Error() string {
	msg := "the egress gateway refused the tunnel: " + e.Status
	if e.Body != "" {
		msg += " (" + e.Body + ")"
	}
	return msg
}

// proxyFor is the proxy the agent's environment names for target, read
// as every proxy-aware tool does (HTTPS_PROXY, then HTTP_PROXY; both
// cases; NO_PROXY). nil means a direct connection: a NO_PROXY name, or
// no proxy set at all (then only what the agent's network reaches, which
// in an agent is nothing outside).
func proxyFor(target string, getenv func(string) string) (*url.URL, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	cfg := httpproxy.Config{
		HTTPProxy:  env("HTTP_PROXY", "http_proxy"),
		HTTPSProxy: env("HTTPS_PROXY", "https_proxy"),
		NoProxy:    env("NO_PROXY", "no_proxy"),
	}
	if cfg.HTTPSProxy == "" {
		cfg.HTTPSProxy = cfg.HTTPProxy // a CONNECT proxy either way
	}
	u, err := cfg.ProxyFunc()(&url.URL{Scheme: "https", Host: target})
	if err != nil {
		return nil, fmt.Errorf("proxy setting: %w", err)
	}
	if u != nil && u.Scheme != "http" {
		return nil, fmt.Errorf("proxy %s: only http:// proxies are supported", u.Redacted())
	}
	return u, nil
}

// Dial returns a connection to target: a CONNECT tunnel through the
// environment's proxy, or a direct one when none applies. rest holds
// bytes the proxy sent after its reply (a server-first banner, as ssh's),
// which belong to the tunnel.
func Dial(ctx context.Context, target string, getenv func(string) string) (net.Conn, []byte, error) {
	proxy, err := proxyFor(target, getenv)
	if err != nil {
		return nil, nil, err
	}
	d := net.Dialer{Timeout: dialTimeout}
	if proxy == nil {
		c, err := d.DialContext(ctx, "tcp", target)
		return c, nil, err
	}
	paddr := proxy.Host
	if proxy.Port() == "" {
		paddr = net.JoinHostPort(proxy.Hostname(), "80")
	}
	c, err := d.DialContext(ctx, "tcp", paddr)
	if err != nil {
		return nil, nil, fmt.Errorf("egress proxy %s: %w", paddr, err)
	}
	rest, err := handshake(c, proxy, target)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, rest, nil
}

// handshake sends the CONNECT request and reads the reply.
func handshake(c net.Conn, proxy *url.URL, target string) ([]byte, error) {
	_ = c.SetDeadline(time.Now().Add(replyTimeout))
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if u := proxy.User; u != nil {
		pw, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return nil, fmt.Errorf("egress proxy %s: %w", proxy.Host, err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("egress proxy %s: reading its reply: %w", proxy.Host, err)
	}
	if res.StatusCode != http.StatusOK {
		// No Body.Close: it would drain the rest of a long body; the
		// caller closes the conn instead.
		body, _ := io.ReadAll(io.LimitReader(res.Body, maxReplyBody))
		return nil, &RefusedError{Status: res.Status, Body: strings.Join(strings.Fields(string(body)), " ")}
	}
	_ = c.SetDeadline(time.Time{})
	rest := make([]byte, br.Buffered())
	_, _ = io.ReadFull(br, rest)
	return rest, nil
}

// splice relays stdin to the tunnel and the tunnel to stdout until the
// remote closes. stdin's EOF half-closes the tunnel, so the remote sees
// it and still finishes its answer.
func splice(c net.Conn, rest []byte, stdin io.Reader, stdout io.Writer) error {
	go func() {
		_, _ = io.Copy(c, stdin)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	if _, err := stdout.Write(rest); err != nil {
		return err
	}
	_, err := io.Copy(stdout, c)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
