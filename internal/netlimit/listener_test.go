package netlimit

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/logger"
)

// serve accepts on l and holds every admitted conn open, echoing one byte
// so the client can tell an admitted conn from a refused one.
func serve(t *testing.T, l net.Listener) {
	t.Helper()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// admitted reports whether the server answers on c (a refused conn is
// closed: the read fails).
func admitted(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	if err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read: %v (neither an answer nor a hang-up)", err)
	}
	return err == nil
}

func listen(t *testing.T, opts Options) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(ln, opts)
	t.Cleanup(func() { l.Close() })
	serve(t, l)
	return l
}

func dial(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPerPeerCapRefusesBeyondCapAndFreesOnClose(t *testing.T) {
	var buf logger.SyncBuffer
	var mu sync.Mutex
	refusals := map[string]int{}
	l := listen(t, Options{Name: "agent", MaxPerPeer: 3, Log: logger.New(&buf, "info", "test"),
		OnRefuse: func(name, reason string) { mu.Lock(); refusals[name+"/"+reason]++; mu.Unlock() }})
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c := dial(t, l)
		if !admitted(t, c) {
			t.Fatalf("conn %d within the cap refused", i)
		}
		held = append(held, c)
	}
	for i := 0; i < 5; i++ {
		if admitted(t, dial(t, l)) {
			t.Fatalf("conn %d beyond the cap admitted", 3+i)
		}
	}
	if got := l.Refused(); got != 5 {
		t.Fatalf("Refused() = %d, want 5", got)
	}
	mu.Lock()
	if refusals["agent/"+ReasonPeerCap] != 5 {
		t.Errorf("OnRefuse counts %v", refusals)
	}
	mu.Unlock()
	// Throttled: five refusals from one peer write one line.
	if n := strings.Count(buf.String(), `"event":"conn_refused"`); n != 1 {
		t.Errorf("%d conn_refused lines for 5 refusals, want 1 (throttled):\n%s", n, buf.String())
	}
	// Closing one frees its slot (the server notices the hang-up).
	held[0].Close()
	lo := netip.MustParseAddr("127.0.0.1")
	deadline := time.Now().Add(5 * time.Second)
	for l.Open(lo) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: open=%d", l.Open(lo))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !admitted(t, dial(t, l)) {
		t.Fatal("a conn after one closed was refused")
	}
}

func TestAllowFilterRefusesOtherPeers(t *testing.T) {
	var buf logger.SyncBuffer
	l := listen(t, Options{Name: "health", Log: logger.New(&buf, "info", "test"),
		Allow: func(ip netip.Addr) bool { return ip == netip.MustParseAddr("10.9.9.9") }})
	if admitted(t, dial(t, l)) {
		t.Fatal("a peer outside the allow filter was admitted")
	}
	// The client can see the close before the line is written: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Contains([]byte(buf.String()), []byte(`"reason":"peer_not_allowed"`)) {
		if time.Now().After(deadline) {
			t.Fatalf("no peer_not_allowed line: %s", buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	l2 := listen(t, Options{Name: "health", Allow: func(ip netip.Addr) bool { return ip.IsLoopback() }})
	if !admitted(t, dial(t, l2)) {
		t.Fatal("an allowed peer was refused")
	}
}
