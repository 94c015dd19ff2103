package rpcbuf

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func TestTier(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 0}, {1, 0}, {4096, 0}, {4097, 1}, {1 << 20, 20 - minShift}, {1<<20 + 1, 21 - minShift},
		{1 << maxShift, maxShift - minShift}, {1<<maxShift + 1, -1},
	} {
		if got := tier(tc.n); got != tc.want {
			t.Errorf("tier(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

// A pooled buffer comes back dirty, so the codec must overwrite it fully:
// round trips of messages of many sizes through one codec, with every
// freed buffer first scribbled over, decode exactly what was encoded.
func TestCodecRoundTripReusesDirtyBuffers(t *testing.T) {
	c := NewCodec()
	for _, size := range []int{0, 10, 1000, 5000, 32 << 10, 33 << 10, 1<<20 - 1<<10, 1 << 20, 3 << 20, 17 << 20} {
		data := bytes.Repeat([]byte{byte(size)}, size)
		want := &clawkerdv1.Response{CommandId: "c1", Payload: &clawkerdv1.Response_Output{Output: &clawkerdv1.OutputChunk{Data: data}}}
		enc, err := c.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := proto.Marshal(want)
		if !bytes.Equal(enc.Materialize(), ref) {
			t.Fatalf("size %d: encoding differs from proto.Marshal", size)
		}
		// Split into 16 KiB pieces like HTTP/2 frames before decoding.
		var frames mem.BufferSlice
		wire := enc.Materialize()
		for len(wire) > 0 {
			n := min(len(wire), 16<<10)
			frames = append(frames, mem.SliceBuffer(append([]byte(nil), wire[:n]...)))
			wire = wire[n:]
		}
		scribble(enc)
		got := &clawkerdv1.Response{}
		if err := c.Unmarshal(frames, got); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		// gRPC frees the frames after Unmarshal: the message (aliased
		// from 32 KiB) must not point into them.
		scribble(frames)
		if !proto.Equal(got, want) {
			t.Fatalf("size %d: decoded message differs", size)
		}
	}
}

// scribble frees enc after filling its buffers with garbage.
func scribble(enc mem.BufferSlice) {
	for _, b := range enc {
		d := b.ReadOnlyData()
		for i := range d {
			d[i] = 0xA5
		}
	}
	enc.Free()
}

func TestMarshalRejectsNonProto(t *testing.T) {
	c := NewCodec()
	if _, err := c.Marshal(struct{}{}); err == nil {
		t.Fatal("Marshal of a non-proto value succeeded")
	}
	if err := c.Unmarshal(nil, struct{}{}); err == nil {
		t.Fatal("Unmarshal into a non-proto value succeeded")
	}
}

func TestPoolIgnoresForeignBuffers(t *testing.T) {
	p := &Pool{}
	b := make([]byte, 5000) // not a power-of-two capacity
	p.Put(&b)
	got := p.Get(5000)
	if cap(*got) != 8192 || len(*got) != 5000 {
		t.Fatalf("Get(5000) = len %d cap %d, want len 5000 cap 8192", len(*got), cap(*got))
	}
}
