package creds

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/agent"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv/gitserve"
)

type fakeLabels map[string]map[string]string

func (f fakeLabels) ContainerLabels(_ context.Context, id string) (map[string]string, error) {
	l, ok := f[id]
	if !ok {
		return nil, errors.New("no such container")
	}
	return l, nil
}

func agentLabels(creds string) map[string]string {
	return map[string]string{consts.LabelPurpose: consts.PurposeAgent, consts.LabelCredentials: creds}
}

// relayClient is an agent.ExtendedAgent whose every message goes through
// Broker.Answer, as clawkerd's socket would send it.
type relayClient struct {
	b       *Broker
	id      string
	trusted bool
}

func (r relayClient) pipe() agent.ExtendedAgent {
	c1, c2 := net.Pipe()
	go func() {
		defer c2.Close()
		var hdr [4]byte
		for {
			if _, err := io.ReadFull(c2, hdr[:]); err != nil {
				return
			}
			msg := make([]byte, binary.BigEndian.Uint32(hdr[:]))
			if _, err := io.ReadFull(c2, msg); err != nil {
				return
			}
			out, err := r.b.Answer(context.Background(), r.id, r.trusted, clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, msg)
			if err != nil {
				out = []byte{5}
			}
			if _, err := c2.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(out))), out...)); err != nil {
				return
			}
		}
	}()
	return agent.NewClient(c1)
}

func TestBrokerSSHAgentGate(t *testing.T) {
	sock, pub := gitserve.HostSSHAgent(t)
	labels := fakeLabels{"in": agentLabels("ssh_agent"), "gitonly": agentLabels("git"), "none": agentLabels(""),
		"notagent": {consts.LabelCredentials: "ssh_agent"}}
	b := New(labels, Sources{SSHAgentSock: sock}, nil)
	ctx := context.Background()

	// Opted in and trusted: list and sign work, and the signature verifies.
	c := relayClient{b, "in", true}.pipe()
	keys, err := c.List()
	if err != nil || len(keys) != 1 || string(keys[0].Marshal()) != string(pub.Marshal()) {
		t.Fatalf("list: %v %v", keys, err)
	}
	sig, err := c.Sign(pub, []byte("challenge"))
	if err != nil || pub.Verify([]byte("challenge"), sig) != nil {
		t.Fatalf("sign: %v", err)
	}
	// Management requests never reach the host agent.
	_, extra, _ := ed25519.GenerateKey(rand.Reader)
	if err := c.Add(agent.AddedKey{PrivateKey: extra}); err == nil {
		t.Fatal("add-identity was forwarded")
	}
	if err := c.RemoveAll(); err == nil {
		t.Fatal("remove-all was forwarded")
	}
	if err := c.Lock([]byte("pw")); err == nil {
		t.Fatal("lock was forwarded")
	}
	if keys, _ := c.List(); len(keys) != 1 {
		t.Fatalf("host agent changed: %d keys", len(keys))
	}
	if got := b.Kinds(ctx, "in", true); len(got) != 1 || got[0] != clawkerdv1.CredKind_CRED_KIND_SSH_AGENT {
		t.Fatalf("kinds: %v", got)
	}

	// Every other case is the same generic refusal.
	for name, tc := range map[string]struct {
		id      string
		trusted bool
	}{
		"untrusted": {"in", false}, "not opted in": {"none", true}, "other kind only": {"gitonly", true},
		"not an agent": {"notagent", true}, "unknown container": {"ghost", true},
	} {
		if _, err := b.Answer(ctx, tc.id, tc.trusted, clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, []byte{11}); !errors.Is(err, ErrRefused) || err.Error() != ErrRefused.Error() {
			t.Errorf("%s: %v", name, err)
		}
		if k := b.Kinds(ctx, tc.id, tc.trusted); len(k) != 0 && name != "other kind only" {
			t.Errorf("%s: kinds %v", name, k)
		}
	}
	// No source configured: refused even when opted in.
	if _, err := New(labels, Sources{}, nil).Answer(ctx, "in", true, clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, []byte{11}); !errors.Is(err, ErrRefused) {
		t.Errorf("no source: %v", err)
	}
}

func TestBrokerGitGate(t *testing.T) {
	dir, err := os.MkdirTemp("", "ckg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "g.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	got := make(chan string, 4)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			req, _ := io.ReadAll(c)
			got <- string(req)
			_, _ = c.Write([]byte("protocol=https\nhost=example.test\nusername=u\npassword=p\nextra=dropped\n"))
			_ = c.Close()
		}
	}()
	b := New(fakeLabels{"in": agentLabels("ssh_agent,git"), "sshonly": agentLabels("ssh_agent")}, Sources{GitCredSock: sock}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := []byte("protocol=https\nhost=example.test\n")
	out, err := b.Answer(ctx, "in", true, clawkerdv1.CredKind_CRED_KIND_GIT, req)
	if err != nil || string(out) != "protocol=https\nhost=example.test\nusername=u\npassword=p\n" {
		t.Fatalf("answer: %q %v", out, err)
	}
	if r := <-got; r != string(req) {
		t.Fatalf("server got %q", r)
	}
	if _, err := b.Answer(ctx, "sshonly", true, clawkerdv1.CredKind_CRED_KIND_GIT, req); !errors.Is(err, ErrRefused) {
		t.Fatalf("not opted in to git: %v", err)
	}
	if _, err := b.Answer(ctx, "in", false, clawkerdv1.CredKind_CRED_KIND_GIT, req); !errors.Is(err, ErrRefused) {
		t.Fatalf("untrusted: %v", err)
	}
	select {
	case r := <-got:
		t.Fatalf("a refused request reached the host: %q", r)
	default:
	}
}

// countingLabels counts label reads: each is a Docker inspect in the CP.
type countingLabels struct {
	fakeLabels
	reads int
}

func (c *countingLabels) ContainerLabels(ctx context.Context, id string) (map[string]string, error) {
	c.reads++
	return c.fakeLabels.ContainerLabels(ctx, id)
}

// Every Session asks Kinds on connect, so a CP restart pays it once per
// agent: one label read for all kinds, none when no kind has a source.
func TestBrokerKindsReadsLabelsOnce(t *testing.T) {
	dir := t.TempDir()
	ssh, git := filepath.Join(dir, "ssh.sock"), filepath.Join(dir, "git.sock")
	for _, p := range []string{ssh, git} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	labels := &countingLabels{fakeLabels: fakeLabels{"both": agentLabels("ssh_agent,git"), "git": agentLabels("git")}}
	ctx := context.Background()
	b := New(labels, Sources{SSHAgentSock: ssh, GitCredSock: git}, nil)
	want := []clawkerdv1.CredKind{clawkerdv1.CredKind_CRED_KIND_SSH_AGENT, clawkerdv1.CredKind_CRED_KIND_GIT}
	if got := b.Kinds(ctx, "both", true); !slices.Equal(got, want) || labels.reads != 1 {
		t.Fatalf("both: kinds %v after %d label reads, want %v after 1", got, labels.reads, want)
	}
	if got := b.Kinds(ctx, "git", true); !slices.Equal(got, want[1:]) || labels.reads != 2 {
		t.Fatalf("git only: kinds %v after %d label reads", got, labels.reads)
	}
	// Only the git source configured: ssh_agent is not offered even to an
	// agent that opted in to it.
	if got := New(labels, Sources{GitCredSock: git}, nil).Kinds(ctx, "both", true); !slices.Equal(got, want[1:]) {
		t.Fatalf("git source only: kinds %v", got)
	}
	labels.reads = 0
	if got := New(labels, Sources{}, nil).Kinds(ctx, "both", true); got != nil || labels.reads != 0 {
		t.Fatalf("no sources: kinds %v after %d label reads, want none after 0", got, labels.reads)
	}
	if got := b.Kinds(ctx, "both", false); got != nil || labels.reads != 0 {
		t.Fatalf("untrusted: kinds %v after %d label reads, want none after 0", got, labels.reads)
	}
}
