package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// get fetches a URL through the proxy the environment names (as any
// agent tool would), trusting the fake internet's CA.
func get(fs *flag.FlagSet, args []string) error {
	ca := fs.String("ca", "/fakenet/ca.pem", "extra roots, comma-separated")
	method := fs.String("X", "GET", "method")
	noProxy := fs.Bool("noproxy", false, "ignore the proxy variables")
	_ = fs.Parse(args)
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: roots(*ca)}}
	if *noProxy {
		tr.Proxy = nil
	}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequest(*method, fs.Arg(0), nil)
	if err != nil {
		return err
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d %s", res.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Println("OK", strings.TrimSpace(string(body)))
	return nil
}

// roots is the system pool plus the PEM files in the comma-separated list.
func roots(files string) *x509.CertPool {
	pool, _ := x509.SystemCertPool()
	if pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range strings.Split(files, ",") {
		if b, err := os.ReadFile(f); err == nil {
			pool.AppendCertsFromPEM(b)
		}
	}
	return pool
}

// connect opens a CONNECT tunnel to target through proxy and reads the
// server's first line (an ssh banner).
func connect(fs *flag.FlagSet, args []string) error {
	proxy := fs.String("proxy", "", "host:port")
	target := fs.String("target", "", "host:port")
	sni := fs.String("sni", "", "after CONNECT, open TLS with this SNI instead of reading a banner")
	_ = fs.Parse(args)
	c, err := net.DialTimeout("tcp", *proxy, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", *target, *target)
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	if *sni != "" {
		// Only the gateway's SNI check is under test, not the origin's cert.
		tc := tls.Client(c, &tls.Config{ServerName: *sni, InsecureSkipVerify: true}) //nolint:gosec
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls with sni %s: %w", *sni, err)
		}
		fmt.Println("OK tls", tc.ConnectionState().ServerName)
		return nil
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	fmt.Println("OK", strings.TrimSpace(line))
	return nil
}

// query asks one DNS server for a name's A record over UDP.
func query(fs *flag.FlagSet, args []string) error {
	server := fs.String("server", "", "ip:port (default: the first nameserver of /etc/resolv.conf)")
	_ = fs.Parse(args)
	if *server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(conf.Servers) == 0 {
			return fmt.Errorf("no -server and no resolver in /etc/resolv.conf: %v", err)
		}
		*server = net.JoinHostPort(conf.Servers[0], conf.Port)
	}
	m := new(dns.Msg).SetQuestion(dns.Fqdn(fs.Arg(0)), dns.TypeA)
	cl := &dns.Client{Timeout: 3 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	r, _, err := cl.ExchangeContext(ctx, m, *server)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		return fmt.Errorf("rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	fmt.Println("OK", r.Answer[0].String())
	return nil
}

// dialTCP connects directly, no proxy.
func dialTCP(fs *flag.FlagSet, args []string) error {
	_ = fs.Parse(args)
	c, err := net.DialTimeout("tcp", fs.Arg(0), 3*time.Second)
	if err != nil {
		return err
	}
	c.Close()
	fmt.Println("OK connected")
	return nil
}
