// Package rpcbuf is a gRPC proto codec for streams that carry bulk bytes
// (exec output). gRPC's default codec takes its buffers from a shared
// pool with power-of-two tiers up to 32 KiB and then 1 MiB, and zeroes
// the whole tier on every Get: a 33 KiB message costs a 1 MiB memclr,
// which profiled as a third of all CPU when streaming exec output. This
// codec pools buffers in every power-of-two tier and does not zero them:
// both uses overwrite the buffer completely (Marshal fills exactly the
// encoded size, Unmarshal copies the received frames in).
package rpcbuf

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Tiers are 2^minShift … 2^maxShift bytes; larger buffers are not pooled.
const (
	minShift = 12
	maxShift = 24
)

// Pool is a mem.BufferPool of power-of-two tiers that hands out buffers
// without zeroing them. Callers must write every byte they later read.
type Pool struct {
	tiers [maxShift - minShift + 1]sync.Pool
}

// tier returns the index of the smallest tier holding n bytes, or -1.
func tier(n int) int {
	if n > 1<<maxShift {
		return -1
	}
	s := bits.Len(uint(max(n, 1) - 1))
	return max(s, minShift) - minShift
}

// Get returns a buffer of length n.
func (p *Pool) Get(n int) *[]byte {
	t := tier(n)
	if t < 0 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(t+minShift))
	return &b
}

// Put returns a buffer obtained from Get.
func (p *Pool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return // not one of ours: let the GC have it
	}
	p.tiers[tier(c)].Put(b)
}

// Codec is the proto codec over a Pool. Its Name is "proto", so peers see
// the ordinary content-subtype and need not use it too.
type Codec struct{ pool *Pool }

// NewCodec returns a codec with its own pool.
func NewCodec() *Codec { return &Codec{pool: &Pool{}} }

var _ encoding.CodecV2 = (*Codec)(nil)

// Name is the content-subtype.
func (*Codec) Name() string { return "proto" }

// Marshal encodes v into a pooled buffer that gRPC frees after writing.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("rpcbuf: marshal %T: not a proto message", v)
	}
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true} // Size just cached it
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	b, err := opts.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal decodes data into v (proto copies bytes fields out).
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rpcbuf: unmarshal %T: not a proto message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// transportPool is the process's gRPC transport buffer pool.
var transportPool Pool

// TransportPool is a non-zeroing pool for gRPC's transport (received
// DATA frames; grpc/experimental.BufferPool and WithBufferPool). gRPC's
// default pool zeroes every frame buffer it hands out, a pass over every
// received byte that profiled at 4 % of the CP's CPU under exec output;
// the transport reads each frame into its buffer in full before use.
func TransportPool() *Pool { return &transportPool }
