package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

func tlsPeer(cs tls.ConnectionState) *peer.Peer {
	return &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, AuthInfo: credentials.TLSInfo{State: cs}}
}

// A certificate the peer merely presented (PeerCertificates) is never
// taken for its identity; only the leaf of a verified chain is.
func TestPeerLeafOnlyReturnsVerifiedLeaf(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	good, err := ca.MintCLI(now)
	if err != nil {
		t.Fatal(err)
	}
	rogueCA, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := rogueCA.MintCLI(now)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		p    *peer.Peer
		want *x509.Certificate
	}{
		"nil peer":         {nil, nil},
		"no TLS":           {&peer.Peer{Addr: &net.TCPAddr{}}, nil},
		"presented only":   {tlsPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{rogue.Cert}}), nil},
		"empty chain":      {tlsPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{rogue.Cert}, VerifiedChains: [][]*x509.Certificate{{}}}), nil},
		"verified differs": {tlsPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{rogue.Cert}, VerifiedChains: [][]*x509.Certificate{{good.Cert, ca.Cert}}}), good.Cert},
	}
	for name, c := range cases {
		if got := PeerLeaf(c.p); got != c.want {
			t.Fatalf("%s: PeerLeaf = %v, want %v", name, subject(got), subject(c.want))
		}
		ctx := context.Background()
		if c.p != nil {
			ctx = peer.NewContext(ctx, c.p)
		}
		if got := PeerLeafFromContext(ctx); got != c.want {
			t.Fatalf("%s: PeerLeafFromContext = %v, want %v", name, subject(got), subject(c.want))
		}
	}
}

func subject(c *x509.Certificate) string {
	if c == nil {
		return "<nil>"
	}
	return c.Subject.CommonName + " from " + c.Issuer.CommonName
}

// The server-side VerifyConnection callbacks (clawkerd and admin) read
// VerifiedLeaf: with RequireAndVerifyClientCert the chain is verified
// before the callback runs, while a listener that only asks for a cert
// (RequireAnyClientCert) yields no verified leaf, so those callbacks fail
// closed on a misconfigured listener.
func TestVerifiedLeafInServerVerifyConnection(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.MintControlPlane(nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.MintCLI(now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	pair := func(l *Leaf) tls.Certificate {
		return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
	}
	for _, tc := range []struct {
		auth tls.ClientAuthType
		want bool
	}{{tls.RequireAndVerifyClientCert, true}, {tls.RequireAnyClientCert, false}} {
		var seen *x509.Certificate
		var called bool
		scfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair(srv)},
			ClientAuth: tc.auth, ClientCAs: pool,
			VerifyConnection: func(cs tls.ConnectionState) error {
				called, seen = true, VerifiedLeaf(&cs)
				return nil
			}}
		ccfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair(cli)},
			RootCAs: pool, ServerName: "localhost"}
		a, b := net.Pipe()
		errc := make(chan error, 1)
		go func() { errc <- tls.Server(a, scfg).Handshake() }()
		cerr := tls.Client(b, ccfg).Handshake()
		serr := <-errc
		a.Close()
		b.Close()
		if cerr != nil || serr != nil {
			t.Fatalf("%v: handshake: client %v, server %v", tc.auth, cerr, serr)
		}
		if !called {
			t.Fatalf("%v: VerifyConnection not called", tc.auth)
		}
		if got := seen != nil && seen.Equal(cli.Cert); got != tc.want {
			t.Fatalf("%v: verified leaf %s, want present=%v", tc.auth, subject(seen), tc.want)
		}
	}
}
