package auth

import (
	"context"
	"crypto/x509"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerLeaf is the verified leaf certificate of a gRPC peer, or nil: the
// one place a handler or interceptor learns who called it. It applies
// VerifiedLeaf's rule, so a certificate the TLS stack did not chain to a
// trusted root is never returned.
func PeerLeaf(p *peer.Peer) *x509.Certificate {
	if p == nil {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return VerifiedLeaf(&ti.State)
}

// PeerLeafFromContext is PeerLeaf for the peer of an RPC's context.
func PeerLeafFromContext(ctx context.Context) *x509.Certificate {
	p, _ := peer.FromContext(ctx)
	return PeerLeaf(p)
}
