package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv/hostile"
)

// attackerDir is where the attacker binary and each attack's material
// live inside a container.
const attackerDir = "/attack"

// outcome is the attacker's JSON line (internal/testenv/hostile).
type outcome = hostile.Outcome

// buildAttacker compiles test/e2e/attacker statically.
func buildAttacker(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(t.TempDir(), "attacker")
	cmd := exec.Command("go", "build", "-o", out, "./test/e2e/attacker")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build attacker: %v\n%s", err, b)
	}
	return out
}

// startHostile runs a busybox container on clawker-net that is not made by
// clawker: with labels nil it is a plain stranger; with agent labels it
// impersonates an agent (no cert, no clawkerd).
func startHostile(t *testing.T, name string, labels map[string]string) string {
	t.Helper()
	ctx := context.Background()
	l := map[string]string{consts.LabelTest: "e2e"}
	for k, v := range labels {
		l[k] = v
	}
	res, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Name:             name,
		Config:           &container.Config{Image: agentImage, Cmd: []string{"sleep", "3600"}, Labels: l},
		HostConfig:       &container.HostConfig{NetworkMode: container.NetworkMode(consts.NetworkName)},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{consts.NetworkName: {}}},
	})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = suite.docker.ContainerRemove(context.Background(), res.ID, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	})
	if _, err := suite.docker.ContainerStart(ctx, res.ID, mobyclient.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return res.ID
}

// copyFiles writes files (path relative to /) into a container.
func copyFiles(t *testing.T, id string, files map[string][]byte, mode int64) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		parts := strings.Split(n, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/") + "/"
			if !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Size: int64(len(files[n]))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.docker.CopyToContainer(context.Background(), id, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: &buf}); err != nil {
		t.Fatalf("copy into %s: %v", id, err)
	}
}

// plantAttacker copies the attacker binary into a running container.
func plantAttacker(t *testing.T, id, bin string) {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	copyFiles(t, id, map[string][]byte{strings.TrimPrefix(attackerDir, "/") + "/attacker": b}, 0o755)
}

// execIn runs argv in a container and returns its stdout and exit code.
func execIn(t *testing.T, id string, argv ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ex, err := suite.docker.ExecCreate(ctx, id, mobyclient.ExecCreateOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatalf("exec create in %s: %v", id, err)
	}
	att, err := suite.docker.ExecAttach(ctx, ex.ID, mobyclient.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("exec attach in %s: %v", id, err)
	}
	defer att.Close()
	var out, errb bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errb, att.Reader); err != nil {
		t.Fatalf("exec output in %s: %v", id, err)
	}
	insp, err := suite.docker.ExecInspect(ctx, ex.ID, mobyclient.ExecInspectOptions{})
	if err != nil {
		t.Fatalf("exec inspect in %s: %v", id, err)
	}
	return out.String() + errb.String(), insp.ExitCode
}

// pathExists reports whether path exists in a container's filesystem.
func pathExists(t *testing.T, id, path string) bool {
	t.Helper()
	_, err := suite.docker.ContainerStatPath(context.Background(), id, mobyclient.ContainerStatPathOptions{Path: path})
	if err == nil {
		return true
	}
	if cerrdefs.IsNotFound(err) {
		return false
	}
	t.Fatalf("stat %s in %s: %v", path, id, err)
	return false
}

// material is one attack's key material, written under /attack/<name>/.
type material struct {
	cert, key []byte
	token     string
	assertion string
}

func leafMaterial(t *testing.T, l *auth.Leaf) material {
	t.Helper()
	k, err := auth.KeyPEM(l.Key)
	if err != nil {
		t.Fatal(err)
	}
	return material{cert: auth.CertPEM(l.Cert), key: k}
}

func (m material) with(token, assertion string) material {
	m.token, m.assertion = token, assertion
	return m
}

func (m material) files(name string) map[string][]byte {
	dir := strings.TrimPrefix(attackerDir, "/") + "/" + name + "/"
	f := map[string][]byte{dir + ".keep": nil}
	if m.cert != nil {
		f[dir+"cert.pem"], f[dir+"key.pem"] = m.cert, m.key
	}
	if m.token != "" {
		f[dir+"token"] = []byte(m.token)
	}
	if m.assertion != "" {
		f[dir+"assertion"] = []byte(m.assertion)
	}
	return f
}

// runAttacker runs one attacker invocation in container id.
func runAttacker(t *testing.T, id, name string, m material, args ...string) outcome {
	t.Helper()
	copyFiles(t, id, m.files(name), 0o400)
	argv := append([]string{attackerDir + "/attacker", "-name", name, "-dir", attackerDir + "/" + name}, args...)
	out, code := execIn(t, id, argv...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var o outcome
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &o); err != nil {
		t.Fatalf("attacker %s: exit %d, unparsable output: %v\n%s", name, code, err, out)
	}
	return o
}

// --- forged key material -------------------------------------------------

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// selfSignedCopy re-issues tmpl's subject, SANs and EKUs self-signed.
func selfSignedCopy(t *testing.T, tmpl *x509.Certificate) *auth.Leaf {
	t.Helper()
	k := newKey(t)
	c := *tmpl
	c.Raw, c.RawTBSCertificate, c.RawSubject, c.RawIssuer, c.Signature = nil, nil, nil, nil, nil
	c.AuthorityKeyId, c.SubjectKeyId, c.PublicKey = nil, nil, nil
	der, err := x509.CreateCertificate(rand.Reader, &c, &c, &k.PublicKey, k)
	if err != nil {
		t.Fatalf("self-signed copy: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &auth.Leaf{Cert: cert, Key: k}
}

func mint(t *testing.T, ca *auth.CA, spec auth.LeafSpec, now time.Time) *auth.Leaf {
	t.Helper()
	l, err := ca.Mint(spec, now)
	if err != nil {
		t.Fatalf("mint %s: %v", spec.CommonName, err)
	}
	return l
}

func agentSpec(cn, fullName, containerID string, ekus ...x509.ExtKeyUsage) auth.LeafSpec {
	if len(ekus) == 0 {
		ekus = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return auth.LeafSpec{CommonName: cn, EKUs: ekus,
		URIs: []string{auth.AgentURN(fullName).String(), auth.ContainerURN(containerID).String()}, Lifetime: time.Hour}
}

var b64 = base64.RawURLEncoding

// resign replaces a compact JWT's header with {"alg":alg,"typ":typ} and
// signs header.payload with sign (nil: empty signature, for alg none).
func resign(t *testing.T, jwt, alg string, sign func([]byte) []byte) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", jwt)
	}
	var hdr map[string]any
	raw, err := b64.DecodeString(parts[0])
	if err != nil || json.Unmarshal(raw, &hdr) != nil {
		t.Fatalf("JWT header: %v", err)
	}
	hdr["alg"] = alg
	hb, _ := json.Marshal(hdr)
	input := b64.EncodeToString(hb) + "." + parts[1]
	sig := []byte{}
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + b64.EncodeToString(sig)
}

func hs256(key []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write(in)
		return m.Sum(nil)
	}
}

func es256(t *testing.T, k *ecdsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		h := sha256.Sum256(in)
		r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig
	}
}

// --- admin API from the host ---------------------------------------------

func adminAddr(t *testing.T, e *env) string {
	t.Helper()
	var st struct {
		AdminAddr string `json:"admin_addr"`
	}
	r := e.must("cp", "status", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.AdminAddr == "" {
		t.Fatalf("cp status -o json: %v %s", err, r)
	}
	return st.AdminAddr
}

// adminClient dials the admin API presenting certs (none when empty).
func adminClient(t *testing.T, addr string, ca *x509.CertPool, certs []tls.Certificate) adminv1.AdminServiceClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca, ServerName: consts.ControlPlaneCN, MinVersion: tls.VersionTLS13}
	if len(certs) > 0 {
		// Always present the cert, as an attacker would, even when it does
		// not chain to the CAs the server asks for.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return adminv1.NewAdminServiceClient(conn)
}

func tlsCert(t *testing.T, l *auth.Leaf) []tls.Certificate {
	t.Helper()
	return []tls.Certificate{{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}}
}

// registrySnapshot is every registry row (container, agent, thumbprint),
// sorted: what an attack must not change.
func registrySnapshot(t *testing.T, c adminv1.AdminServiceClient) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.ListAgents(ctx, &adminv1.ListAgentsRequest{})
	if err != nil {
		t.Fatalf("admin ListAgents: %v", err)
	}
	var rows []string
	for _, a := range res.GetAgents() {
		if a.GetRegistered() {
			rows = append(rows, fmt.Sprintf("%s %s/%s %s", a.GetContainerId(), a.GetProject(), a.GetAgent(), a.GetThumbprint()))
		}
	}
	slices.Sort(rows)
	return strings.Join(rows, "\n")
}
