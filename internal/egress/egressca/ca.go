// Package egressca is the per-install TLS interception CA: kept apart from the
// gateway so the CLI, which only creates it, does not link the proxy, its DNS
// server and metrics (their package inits cost every CLI command).
package egressca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sync"
	"time"
)

// CA is the per-install interception CA: `clawker run` will add its
// certificate to agents' trust stores; leaves are minted per SNI and
// cached. Only rules with intercept: true ever see it used.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	now  func() time.Time

	mu    sync.Mutex
	cache map[string]*tls.Certificate
}

// leafCacheMax bounds the leaf cache; past it the cache is dropped whole
// (a re-mint costs one ECDSA signature).
const leafCacheMax = 1024

// leafLifetime is short: leaves are cheap and never persisted.
const leafLifetime = 24 * time.Hour

// NewCA creates a CA with a fresh P-256 key, valid ten years.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("egress CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "clawker egress interception CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("egress CA cert: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("egress CA parse: %w", err)
	}
	return &CA{cert: cert, key: key, now: time.Now, cache: map[string]*tls.Certificate{}}, nil
}

// LoadCA parses a CA written by PEM.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("egress CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("egress CA: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, errors.New("egress CA: not a CA certificate with a signing key")
	}
	return &CA{cert: cert, key: signer, now: time.Now, cache: map[string]*tls.Certificate{}}, nil
}

// PEM returns the certificate and the PKCS#8 key, for the install's home.
func (ca *CA) PEM() (certPEM, keyPEM []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("egress CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Certificate is the CA certificate agents must trust.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Leaf returns a serving certificate for name (a DNS name or IP), minted
// on first use and reused until an hour before it expires.
func (ca *CA) Leaf(name string) (*tls.Certificate, error) {
	now := ca.now()
	ca.mu.Lock()
	if c, ok := ca.cache[name]; ok && now.Add(time.Hour).Before(c.Leaf.NotAfter) {
		ca.mu.Unlock()
		return c, nil
	}
	ca.mu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leaf key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("leaf cert: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("leaf parse: %w", err)
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
	ca.mu.Lock()
	if len(ca.cache) >= leafCacheMax {
		clear(ca.cache)
	}
	ca.cache[name] = c
	ca.mu.Unlock()
	return c, nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
