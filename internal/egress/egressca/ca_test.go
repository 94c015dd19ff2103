package egressca

import (
	"crypto/x509"
	"testing"
)

// A CA written out and loaded back mints leaves that chain to it, for a
// DNS name and for an IP, and reuses a leaf it already minted.
func TestCARoundTripMintsVerifiableLeaves(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.PEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, name := range []string{"example.com", "10.1.2.3"} {
		leaf, err := loaded.Leaf(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Fatalf("%s: leaf does not verify against the CA: %v", name, err)
		}
		again, err := loaded.Leaf(name)
		if err != nil || again != leaf {
			t.Fatalf("%s: second Leaf = %p, %v; want the cached %p", name, again, err, leaf)
		}
	}
	if _, err := LoadCA(certPEM, []byte("not a key")); err == nil {
		t.Fatal("LoadCA accepted a bad key")
	}
}
