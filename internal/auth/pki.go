package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

// Default lifetimes. The CA outlives every leaf; agent leaves are minted
// per container and live as long as a long-running agent plausibly does.
const (
	CALifetime    = 10 * 365 * 24 * time.Hour
	LeafLifetime  = 365 * 24 * time.Hour
	clockSkewBack = 5 * time.Minute
)

// CA is the clawker certificate authority held by the CLI.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA generates a self-signed ECDSA P-256 CA.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{CommonName: consts.CACN, Organization: []string{"clawker"}},
		NotBefore:             now.Add(-clockSkewBack),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads the CA cert and key PEM files.
func LoadCA(certPath, keyPath string) (*CA, error) {
	cert, err := ReadCertFile(certPath)
	if err != nil {
		return nil, err
	}
	key, err := ReadECKeyFile(keyPath)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match cert %s", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LeafSpec describes a leaf certificate to mint.
type LeafSpec struct {
	CommonName string
	EKUs       []x509.ExtKeyUsage
	DNSNames   []string
	IPs        []net.IP
	URIs       []string // parsed with url.Parse by Mint
	Lifetime   time.Duration
	// Key, when set, is certified instead of a freshly generated key.
	Key *ecdsa.PrivateKey
}

// Leaf is a minted certificate with its private key.
type Leaf struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Mint issues a leaf signed by the CA.
func (ca *CA) Mint(spec LeafSpec, now time.Time) (*Leaf, error) {
	if spec.CommonName == "" {
		return nil, errors.New("mint: empty common name")
	}
	key := spec.Key
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("generate leaf key: %w", err)
		}
	}
	life := spec.Lifetime
	if life == 0 {
		life = LeafLifetime
	}
	tmpl := &x509.Certificate{
		SerialNumber: mustSerial(),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: []string{"clawker"}},
		NotBefore:    now.Add(-clockSkewBack),
		NotAfter:     now.Add(life),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  spec.EKUs,
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
	}
	for _, raw := range spec.URIs {
		u, err := parseURN(raw)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf %s: %w", spec.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse leaf: %w", err)
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

// MintAgent issues the agent leaf for one container: CN clawker-clawkerd,
// the agent and container URN SANs, ServerAuth+ClientAuth.
func (ca *CA) MintAgent(project ProjectSlug, agent AgentName, containerID string, now time.Time) (*Leaf, error) {
	if agent.IsZero() {
		return nil, ErrEmptyAgentName
	}
	if !IsContainerID(containerID) {
		return nil, fmt.Errorf("mint agent cert: %q is not a 64-hex container id", containerID)
	}
	return ca.mintAgentLeaf(project, agent, now, ContainerURN(containerID))
}

// mintAgentLeaf issues a clawkerd leaf with the agent SAN and extra URNs.
func (ca *CA) mintAgentLeaf(project ProjectSlug, agent AgentName, now time.Time, extra ...*url.URL) (*Leaf, error) {
	uris := []string{AgentURN(AgentFullName(project, agent)).String()}
	for _, u := range extra {
		uris = append(uris, u.String())
	}
	return ca.Mint(LeafSpec{
		CommonName: consts.ContainerClawkerd,
		EKUs:       []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:       uris,
	}, now)
}

// MintControlPlane issues the CP's cert (server and client: it dials agents).
func (ca *CA) MintControlPlane(extraDNS []string, ips []net.IP, now time.Time) (*Leaf, error) {
	dns := append([]string{consts.ControlPlaneCN, "localhost"}, extraDNS...)
	ips = append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...)
	return ca.Mint(LeafSpec{
		CommonName: consts.ControlPlaneCN,
		EKUs:       []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:   dns,
		IPs:        ips,
	}, now)
}

// MintCLI issues the CLI's admin client cert.
func (ca *CA) MintCLI(now time.Time) (*Leaf, error) {
	return ca.Mint(LeafSpec{
		CommonName: consts.CLICN,
		EKUs:       []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, now)
}

// CertPEM encodes a cert as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes an EC private key as PKCS#8 PEM.
func KeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// PublicKeyPEM encodes a public key as PKIX PEM.
func PublicKeyPEM(k crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParseCertPEM parses the first CERTIFICATE block.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// ParseECKeyPEM parses a PKCS#8 or SEC1 EC private key.
func ParseECKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no private key PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("private key is not ECDSA")
		}
		return ek, nil
	}
	return x509.ParseECPrivateKey(blk.Bytes)
}

// ParsePublicKeyPEM parses a PKIX public key.
func ParsePublicKeyPEM(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PUBLIC KEY PEM block")
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}

// ReadCertFile reads and parses a PEM cert file.
func ReadCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cert: %w", err)
	}
	c, err := ParseCertPEM(b)
	if err != nil {
		return nil, fmt.Errorf("parse cert %s: %w", path, err)
	}
	return c, nil
}

// ReadECKeyFile reads and parses a PEM EC private key file.
func ReadECKeyFile(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	k, err := ParseECKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", path, err)
	}
	return k, nil
}

// ReadCertPool reads a PEM bundle into a pool.
func ReadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA bundle %s holds no certificate", path)
	}
	return pool, nil
}

// HasEKU reports whether cert lists eku (or any usage).
func HasEKU(cert *x509.Certificate, eku x509.ExtKeyUsage) bool {
	for _, u := range cert.ExtKeyUsage {
		if u == eku || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func mustSerial() *big.Int {
	// 128 random bits; crypto/rand.Int never fails on Linux (getrandom).
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
