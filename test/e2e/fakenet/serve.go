package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func serve(fs *flag.FlagSet, args []string) error {
	zone := fs.String("zone", "", "comma-separated names")
	ip := fs.String("ip", "", "address every name resolves to")
	caOut := fs.String("ca", "/fakenet/ca.pem", "where to write the serving CA")
	_ = fs.Parse(args)
	names := strings.Split(*zone, ",")
	cert, caPEM, err := selfSigned(names)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*caOut, caPEM, 0o644); err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			serveWebSocket(w, r)
			return
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if r.URL.Query().Get("size") != "" {
			var n int64
			fmt.Sscan(r.URL.Query().Get("size"), &n)
			w.Header().Set("Content-Length", fmt.Sprint(n))
			_, _ = io.CopyN(w, zeros{}, n)
			return
		}
		fmt.Fprintf(w, "fakenet %s %s %s %s\n", scheme, r.Host, r.Method, r.URL.Path)
	})
	errs := make(chan error, 4)
	go func() { errs <- http.ListenAndServe(":80", h) }()
	go func() {
		srv := &http.Server{Addr: ":443", Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}}
		errs <- srv.ListenAndServeTLS("", "")
	}()
	go func() { errs <- sshd(":22") }()
	go func() {
		dns.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg).SetReply(r)
			q := r.Question[0]
			name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
			found := false
			for _, n := range names {
				found = found || n == name
			}
			switch {
			case !found:
				m.Rcode = dns.RcodeNameError
			case q.Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(*ip)})
			}
			_ = w.WriteMsg(m)
		})
		errs <- (&dns.Server{Addr: ":53", Net: "udp"}).ListenAndServe()
	}()
	fmt.Println("fakenet serving")
	return <-errs
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func selfSigned(names []string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fakenet"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: names,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
