package clawkerd

import (
	"crypto/tls"
	"testing"
	"time"
)

// clawkerd matches the control plane's floor: TLS 1.3 on both the Session
// listener and its client to the CP. A TLS 1.2-only peer is refused even
// with a valid control-plane cert.
func TestTLS13Minimum(t *testing.T) {
	pki := newTestPKI(t)
	if v := ClientTLSConfig(pki.agent, pki.pool).MinVersion; v != tls.VersionTLS13 {
		t.Fatalf("client MinVersion = %#x, want TLS 1.3", v)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLSConfig(pki.agent, pki.pool))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	serverSide := make(chan error, 1)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			serverSide <- c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	handshake := func(maxV uint16) (client, server error) {
		cfg := &tls.Config{Certificates: []tls.Certificate{pki.cp}, InsecureSkipVerify: true, MaxVersion: maxV}
		c, err := tls.Dial("tcp", lis.Addr().String(), cfg)
		if err == nil {
			_ = c.Close()
		}
		select {
		case server = <-serverSide:
		case <-time.After(10 * time.Second):
			t.Fatal("server handshake did not finish")
		}
		return err, server
	}
	if c, s := handshake(tls.VersionTLS13); c != nil || s != nil {
		t.Fatalf("TLS 1.3 control-plane client refused: client %v, server %v", c, s)
	}
	if c, s := handshake(tls.VersionTLS12); c == nil || s == nil {
		t.Fatalf("TLS 1.2 client accepted: client %v, server %v", c, s)
	}
}
