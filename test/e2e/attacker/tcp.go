package main

import (
	"context"
	"net"
	"time"
)

// tcpConnectTimeout bounds a plain connect: a peer on an isolated network
// drops the SYN, so only a timeout answers.
const tcpConnectTimeout = 3 * time.Second

// tcpConnect only opens a TCP connection to target: the network-isolation
// attacks ask whether a peer is reachable at all.
func tcpConnect(ctx context.Context, o opts, out outcome) outcome {
	ctx, cancel := context.WithTimeout(ctx, tcpConnectTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", o.target)
	if err != nil {
		out.Stage, out.Message = "transport", err.Error()
		return out
	}
	c.Close()
	out.OK, out.Stage = true, "tcp"
	return out
}
