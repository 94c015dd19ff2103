package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh/agent"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/clawkerd"
)

// fakeAnswerer records every question and answers from a script.
type fakeAnswerer struct {
	kinds  []clawkerdv1.CredKind
	answer func(kind clawkerdv1.CredKind, data []byte) ([]byte, error)

	mu    sync.Mutex
	asked []string // containerID/trusted per question
}

func (f *fakeAnswerer) Kinds(_ context.Context, _ string, trusted bool) []clawkerdv1.CredKind {
	if !trusted {
		return nil
	}
	return f.kinds
}

func (f *fakeAnswerer) Answer(_ context.Context, id string, trusted bool, kind clawkerdv1.CredKind, data []byte) ([]byte, error) {
	f.mu.Lock()
	f.asked = append(f.asked, id+"/"+map[bool]string{true: "trusted", false: "untrusted"}[trusted])
	f.mu.Unlock()
	return f.answer(kind, data)
}

func (f *fakeAnswerer) questions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

// credAgent runs a real clawkerd serving the ssh-agent socket, dialed by
// a Dialer with answerer a, and returns the socket once the Session is up.
func credAgent(t *testing.T, a CredAnswerer) (string, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ckc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	env := newDTEnv(t, nil, WithCredentials(a))
	id := dtContainerID(t)
	startRealClawkerdWith(t, env, id, func(c *clawkerd.Config) {
		c.Credentials, c.CredSocketDir = []clawkerdv1.CredKind{clawkerdv1.CredKind_CRED_KIND_SSH_AGENT}, dir
	})
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(t, id, EventInitCompleted)
	dtWait(t, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	return filepath.Join(dir, "ssh-agent.sock"), id
}

func listKeys(t *testing.T, sock string) ([]*agent.Key, error) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return agent.NewClient(c).List()
}

// TestCredForwardThroughSession: a question on clawkerd's socket reaches
// the CP's answerer (with the Session's container and trust) over the
// Session, and its answer, or its refusal, reaches the client.
func TestCredForwardThroughSession(t *testing.T) {
	refuse := false
	var mu sync.Mutex
	a := &fakeAnswerer{kinds: []clawkerdv1.CredKind{clawkerdv1.CredKind_CRED_KIND_SSH_AGENT},
		answer: func(kind clawkerdv1.CredKind, data []byte) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			if refuse || kind != clawkerdv1.CredKind_CRED_KIND_SSH_AGENT || len(data) != 1 || data[0] != 11 {
				return nil, errors.New("refused")
			}
			return []byte{12, 0, 0, 0, 0}, nil // no keys
		}}
	sock, id := credAgent(t, a)
	dtWait(t, "credential forwarding enabled", func() bool {
		keys, err := listKeys(t, sock)
		return err == nil && len(keys) == 0
	})
	if q := a.questions(); len(q) == 0 || q[len(q)-1] != id+"/trusted" {
		t.Fatalf("questions %v", q)
	}
	mu.Lock()
	refuse = true
	mu.Unlock()
	if _, err := listKeys(t, sock); err == nil {
		t.Fatal("a refused question was answered")
	}
}

// TestCredForwardOffWhenNotAllowed: when the answerer allows nothing the
// CP never enables forwarding, so clawkerd refuses locally and no
// question reaches the CP.
func TestCredForwardOffWhenNotAllowed(t *testing.T) {
	a := &fakeAnswerer{answer: func(clawkerdv1.CredKind, []byte) ([]byte, error) { return []byte{12, 0, 0, 0, 0}, nil }}
	sock, _ := credAgent(t, a)
	if _, err := listKeys(t, sock); err == nil {
		t.Fatal("answered without CredEnable")
	}
	if q := a.questions(); len(q) != 0 {
		t.Fatalf("questions reached the CP: %v", q)
	}
}
