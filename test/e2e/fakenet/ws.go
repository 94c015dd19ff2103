package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 6455 fixes SHA-1 for the accept key
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID)) //nolint:gosec
	return base64.StdEncoding.EncodeToString(h[:])
}

// serveWebSocket answers an upgrade with 101 and then echoes bytes: the
// gateway's decision is on the upgrade, not on frames.
func serveWebSocket(w http.ResponseWriter, r *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "no hijack", http.StatusInternalServerError)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		wsAccept(r.Header.Get("Sec-WebSocket-Key")))
	_ = brw.Flush()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(c, brw)
}

// wsDial upgrades ws://host/path (plain HTTP through the proxy) or
// wss://host/path (CONNECT, then TLS trusting -ca) to a WebSocket via the
// environment's proxy, and checks the echo.
func wsDial(fs *flag.FlagSet, args []string) error {
	ca := fs.String("ca", "/fakenet/ca.pem", "extra roots, comma-separated")
	_ = fs.Parse(args)
	u, err := url.Parse(fs.Arg(0))
	if err != nil {
		return err
	}
	scheme, port := "http", "80"
	if u.Scheme == "wss" {
		scheme, port = "https", "443"
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), port)
	}
	proxy, err := http.ProxyFromEnvironment(&http.Request{URL: &url.URL{Scheme: scheme, Host: target}})
	if err != nil || proxy == nil {
		return fmt.Errorf("no proxy for %s: %v", scheme, err)
	}
	c, err := net.DialTimeout("tcp", proxy.Host, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var rw net.Conn = c
	reqTarget := "http://" + target + u.RequestURI()
	if u.Scheme == "wss" {
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("CONNECT status %d", res.StatusCode)
		}
		tc := tls.Client(c, &tls.Config{ServerName: u.Hostname(), RootCAs: roots(*ca), NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		rw, reqTarget = tc, u.RequestURI()
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	fmt.Fprintf(rw, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		reqTarget, u.Host, key)
	br := bufio.NewReader(rw)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("status %d %s", res.StatusCode, strings.TrimSpace(string(body)))
	}
	if got := res.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		return fmt.Errorf("bad Sec-WebSocket-Accept %q", got)
	}
	fmt.Fprint(rw, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "ping\n" {
		return fmt.Errorf("echo: %q %v", line, err)
	}
	fmt.Println("OK websocket", u.Path)
	return nil
}
