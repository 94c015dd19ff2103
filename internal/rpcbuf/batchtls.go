package rpcbuf

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// BatchWrites wraps transport credentials so that one Write on the secured
// connection (one gRPC transport flush) reaches the socket as one write
// syscall. crypto/tls writes every TLS record (at most 16 KiB of data)
// with its own syscall; on a loopback or docker-proxy hop each one also
// pays the receiver's TCP processing and a wake-up, which profiled as the
// largest CPU cost of streaming exec output. Pair it with a larger
// grpc.WriteBufferSize so a flush spans many records.
func BatchWrites(c credentials.TransportCredentials) credentials.TransportCredentials {
	return batched{c}
}

type batched struct {
	credentials.TransportCredentials
}

func (b batched) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	bc := &batchConn{Conn: raw}
	conn, ai, err := b.TransportCredentials.ClientHandshake(ctx, authority, bc)
	if err != nil {
		return nil, nil, err
	}
	return &flushConn{Conn: conn, bc: bc}, ai, nil
}

func (b batched) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	bc := &batchConn{Conn: raw}
	conn, ai, err := b.TransportCredentials.ServerHandshake(bc)
	if err != nil {
		return nil, nil, err
	}
	return &flushConn{Conn: conn, bc: bc}, ai, nil
}

func (b batched) Clone() credentials.TransportCredentials {
	return batched{b.TransportCredentials.Clone()}
}

// batchConn is the raw connection under TLS. While a flushConn.Write is in
// progress it collects the records TLS writes; otherwise (handshake,
// alerts, writes TLS makes while reading) it writes through. The buffer
// is borrowed from batchBufs for one flush only: a connection that once
// flushed 256 KiB (exec output or stdin) must not keep that for its life,
// as an idle Session would.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  *[]byte
}

var batchBufs = sync.Pool{New: func() any { return new([]byte) }}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		if c.buf == nil {
			c.buf = batchBufs.Get().(*[]byte)
		}
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *batchConn) begin() {
	c.mu.Lock()
	c.hold = true
	c.mu.Unlock()
}

// flush writes what was collected, in order, with one syscall.
func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	if c.buf == nil {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	batchBufs.Put(c.buf)
	c.buf = nil
	return err
}

// flushConn is the secured connection gRPC writes to.
type flushConn struct {
	net.Conn
	bc *batchConn
}

func (c *flushConn) Write(p []byte) (int, error) {
	c.bc.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.bc.flush(); ferr != nil && err == nil {
		return 0, ferr // the records never left: the connection is broken
	}
	return n, err
}
