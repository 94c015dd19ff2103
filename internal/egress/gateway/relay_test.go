package gateway

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// sinkConn is an upstream that records what relay hands its ReadFrom:
// the raw *net.TCPConn is what lets the kernel splice the tunnel.
type sinkConn struct {
	net.Conn
	got    bytes.Buffer
	source string
}

func (s *sinkConn) Write(b []byte) (int, error) { return s.got.Write(b) }
func (s *sinkConn) ReadFrom(r io.Reader) (int64, error) {
	s.source = fmt.Sprintf("%T", r)
	return s.got.ReadFrom(r)
}

// Bytes the HTTP server buffered with the CONNECT request go first, then
// the bulk copy reads the raw TCP connection, not the bufio.Reader.
func TestRelayDrainsBufferThenCopiesRawConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	payload := make([]byte, 3<<20)
	_, _ = rand.Read(payload)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write(payload)
	}()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(raw, 64<<10)
	if _, err := br.Peek(1); err != nil { // fills the buffer, as the HTTP server's read does
		t.Fatal(err)
	}
	if br.Buffered() == 0 {
		t.Fatal("nothing buffered")
	}
	up := &sinkConn{}
	n, err := relay(up, &bufferedConn{Conn: raw, r: br})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(payload)) || !bytes.Equal(up.got.Bytes(), payload) {
		t.Fatalf("relayed %d bytes (equal %v), want %d", n, bytes.Equal(up.got.Bytes(), payload), len(payload))
	}
	// TCPConn.WriteTo hands net's own unwrapped view of the conn to
	// ReadFrom; both are what TCPConn.ReadFrom splices from.
	if up.source != "*net.TCPConn" && up.source != "net.tcpConnWithoutWriteTo" {
		t.Fatalf("bulk copy read from %s, want the raw *net.TCPConn (splice path)", up.source)
	}
}

// A client that pipelines its first tunnel bytes with the CONNECT request
// (in the same segment) loses none of them, and bulk data after follows
// in order.
func TestTunnelPipelinedBytesThenBulk(t *testing.T) {
	e := newEnv(t, proxyPolicy, nil)
	e.name("git.test")
	conn, err := e.connectRaw()
	if err != nil {
		t.Fatal(err)
	}
	target := "git.test:" + echoTCP(t)
	first := "SSH-2.0-client\r\n"
	if _, err := io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"+first); err != nil {
		t.Fatal(err)
	}
	bulk := make([]byte, 2<<20)
	_, _ = rand.Read(bulk)
	go func() { _, _ = conn.Write(bulk) }()
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 200 Connection Established\r\n" {
		t.Fatalf("status %q %v", line, err)
	}
	if blank, err := br.ReadString('\n'); err != nil || blank != "\r\n" {
		t.Fatalf("header end %q %v", blank, err)
	}
	want := append([]byte("SSH-2.0-fake\r\n"+first), bulk...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("tunnel reordered or lost bytes")
	}
}
