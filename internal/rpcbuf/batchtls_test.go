package rpcbuf

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
)

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// One Write of many TLS records on the secured connection is one write on
// the socket, and the peer (plain TLS) reads exactly the bytes written.
func TestBatchWritesOneSyscallPerWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server := BatchWrites(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS13}))
	client := BatchWrites(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "test"})) //nolint:gosec // test peer

	payload := make([]byte, 256<<10)
	_, _ = rand.Read(payload)
	type result struct {
		got []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			res <- result{err: err}
			return
		}
		defer raw.Close()
		conn, _, err := client.ClientHandshake(context.Background(), "test", raw)
		if err != nil {
			res <- result{err: err}
			return
		}
		got := make([]byte, len(payload))
		_, err = io.ReadFull(conn, got)
		if err == nil {
			_, err = conn.Write([]byte("ack")) // the client side works both ways too
		}
		res <- result{got: got, err: err}
	}()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cc := &countConn{Conn: raw}
	conn, _, err := server.ServerHandshake(cc)
	if err != nil {
		t.Fatal(err)
	}
	before := cc.writes.Load()
	if n, err := conn.Write(payload); err != nil || n != len(payload) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w := cc.writes.Load() - before; w != 1 {
		t.Fatalf("%d socket writes for one Write of %d bytes (%d TLS records), want 1", w, len(payload), len(payload)/(16<<10))
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !bytes.Equal(r.got, payload) {
		t.Fatal("peer read different bytes")
	}
	ack := make([]byte, 3)
	if _, err := io.ReadFull(conn, ack); err != nil || string(ack) != "ack" {
		t.Fatalf("read %q, %v", ack, err)
	}
}
