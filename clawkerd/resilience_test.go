package clawkerd

import (
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

// TestNilPayloadsDoNotCrash: every oneof arm with a nil message is handled.
func TestNilPayloadsDoNotCrash(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.session(t)
	for _, cmd := range []*clawkerdv1.Command{
		{CommandId: "a", Payload: &clawkerdv1.Command_Shell{}},
		{CommandId: "b", Payload: &clawkerdv1.Command_Stdin{}},
		{CommandId: "c", Payload: &clawkerdv1.Command_CloseStdin{}},
		{CommandId: "d", Payload: &clawkerdv1.Command_Signal{}},
		{CommandId: "e", Payload: &clawkerdv1.Command_AgentInitialized{}},
		{CommandId: "f", Payload: &clawkerdv1.Command_AgentReady{}},
		{CommandId: "g", Payload: &clawkerdv1.Command_Hello{}},
	} {
		c.send(cmd)
		if r := c.next(cmd.GetCommandId()); r == nil {
			t.Fatalf("%s: no reply", cmd.GetCommandId())
		}
	}
	if ack := c.hello(); ack == nil {
		t.Fatal("session died")
	}
}

// blackholeProxy forwards TCP until freeze, after which it keeps both
// sockets open but moves no bytes: a CP that vanished without a FIN.
type blackholeProxy struct {
	lis    net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &blackholeProxy{lis: lis}
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go p.pump(in, out)
			go p.pump(out, in)
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			_ = c.Close()
		}
	})
	return p
}

func (p *blackholeProxy) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestKeepaliveDetectsDeadCP: when the CP stops answering (no FIN), the
// server's keepalive notices, the Session ends and its commands die.
func TestKeepaliveDetectsDeadCP(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.KeepaliveTime = time.Second
		c.KeepaliveTimeout = time.Second
	})
	proxy := newBlackholeProxy(t, ts.addr)
	viaProxy := &testServer{addr: proxy.lis.Addr().String(), pki: ts.pki}
	c := openSession(t, viaProxy.dial(t, ts.pki.cp))
	pidFile := t.TempDir() + "/pid"
	c.send(shell("long", stages(stage("sh", "-c", "echo $$ > "+pidFile+"; exec sleep 600"))))
	c.next("long")
	var pid string
	eventually(t, 10*time.Second, "pid file", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid = strings.TrimSpace(string(b))
		return pid != ""
	})
	if ts.srv.ActiveSessions() != 1 {
		t.Fatal("session not active")
	}
	proxy.frozen.Store(true)
	eventually(t, 30*time.Second, "keepalive teardown", func() bool { return ts.srv.ActiveSessions() == 0 })
	eventually(t, 10*time.Second, "command killed", func() bool {
		_, err := os.Stat("/proc/" + pid)
		return os.IsNotExist(err)
	})
}
