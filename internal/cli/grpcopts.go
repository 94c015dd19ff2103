package cli

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"github.com/clawker/clawker/internal/rpcbuf"
)

// Admin connection transport settings for the exec data plane, where
// output arrives in ~1 MiB messages at hundreds of MiB/s:
//   - fixed flow-control windows (which also turn off gRPC's BDP probing)
//     large enough that the CP never waits for a WINDOW_UPDATE while the
//     CLI writes a chunk to stdout; they are credit, not allocated memory,
//     and the CP's exec output window (4 MiB) bounds what is in flight;
//   - a larger read buffer, for fewer read syscalls per chunk, and a
//     write buffer that holds a whole exec -i Stdin message (one flush);
//   - the rpcbuf codec, which decodes without gRPC's zeroed 1 MiB buffer
//     per message.
const (
	adminStreamWindow = 4 << 20
	adminConnWindow   = 8 << 20
	adminReadBuffer   = 256 << 10
	adminWriteBuffer  = stdinMessageMax
)

// adminTransportOptions are the HTTP/2 transport settings of the admin
// connection (flow-control windows, buffer sizes, codec), kept apart from
// the connection setup in adminclient.go because they are tuned for the
// exec data plane.
func adminTransportOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(adminStreamWindow),
		grpc.WithInitialConnWindowSize(adminConnWindow),
		grpc.WithReadBufferSize(adminReadBuffer),
		grpc.WithWriteBufferSize(adminWriteBuffer),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rpcbuf.NewCodec())),
		experimental.WithBufferPool(rpcbuf.TransportPool()),
	}
}
