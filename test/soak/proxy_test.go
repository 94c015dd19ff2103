package soak

import (
	"bytes"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
)

// sockProxy is a unix-socket proxy in front of the Docker engine's socket.
// The CP container gets its socket bind-mounted instead of the engine's, so
// the test can cut the CP's connections (the events stream among them) and
// refuse new ones for a while: an outage of the engine API as the CP sees
// it, while the test itself keeps using the engine directly.
type sockProxy struct {
	ln       net.Listener
	upstream string

	down    atomic.Bool
	refused atomic.Int64 // connections refused while down
	cut     atomic.Int64 // connections closed by cutAll
	events  atomic.Int64 // connections whose first request was /events

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newSockProxy(path, upstream string) (*sockProxy, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// The CP may run as any user in its container.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	p := &sockProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *sockProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			p.refused.Add(1)
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *sockProxy) serve(c net.Conn) {
	defer p.wg.Done()
	up, err := net.Dial("unix", p.upstream)
	if err != nil {
		c.Close()
		return
	}
	p.track(c, up)
	defer p.untrack(c, up)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(eventsSpotter{up, &p.events}, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

// eventsSpotter counts requests for the events stream on their way
// upstream (keep-alive connections carry several requests).
type eventsSpotter struct {
	io.Writer
	n *atomic.Int64
}

func (w eventsSpotter) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("/events?")) || bytes.Contains(b, []byte("/events ")) {
		w.n.Add(1)
	}
	return w.Writer.Write(b)
}

func (p *sockProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

func (p *sockProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// cutAll closes every open connection (both sides).
func (p *sockProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		p.cut.Add(1)
	}
}

// setDown makes the proxy refuse (accept and close) new connections.
func (p *sockProxy) setDown(down bool) { p.down.Store(down) }

func (p *sockProxy) Close() {
	p.ln.Close()
	p.cutAll()
	p.wg.Wait()
}
