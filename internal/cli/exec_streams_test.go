package cli

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/admin"
)

// chunkExec answers every exec with stdout, stderr and exit code 5, and
// records the starts.
type chunkExec struct {
	mu     sync.Mutex
	starts []*adminv1.ExecStart
}

func (c *chunkExec) Exec(_ context.Context, _ string, s *adminv1.ExecStart) (admin.ExecStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starts = append(c.starts, s)
	return &chunkStream{}, nil
}

type chunkStream struct{ i int }

func (s *chunkStream) Recv() ([]byte, bool, int32, error) {
	s.i++
	switch s.i {
	case 1:
		return []byte("to-out\n"), false, 0, nil
	case 2:
		return []byte("to-err\n"), true, 0, nil
	}
	return nil, false, 5, io.EOF
}
func (*chunkStream) Resize(uint32, uint32) error { return nil }
func (*chunkStream) Stdin([]byte) error          { return nil }
func (*chunkStream) CloseStdin() error           { return nil }
func (*chunkStream) Signal(int32) error          { return nil }
func (*chunkStream) Close() error                { return nil }

// Without -t stderr goes to clawker's stderr and separate_stderr is
// asked for; with -t a terminal is asked for instead; the exit code
// passes through either way.
func TestExecStderrApartAndTTYRequest(t *testing.T) {
	home := initHome(t)
	id := strings.Repeat("ef", 32)
	ex := &chunkExec{}
	t.Setenv(EnvCPAdminAddr, serveAdminWith(t, home, id, ex))
	t.Setenv("TERM", "xterm-test")
	h := &harness{home: home}
	out, stderr, code := h.run(t, "exec", "--allow-untrusted", "-p", "web", "dev", "--", "sh")
	if code != 5 || out != "to-out\n" || !strings.HasSuffix(stderr, "to-err\n") || strings.Contains(out, "to-err") {
		t.Fatalf("exec: exit %d stdout %q stderr %q", code, out, stderr)
	}
	if _, _, code := h.run(t, "exec", "-t", "--allow-untrusted", "-p", "web", "dev", "--", "sh"); code != 5 {
		t.Fatalf("exec -t: exit %d", code)
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if len(ex.starts) != 2 {
		t.Fatalf("%d execs", len(ex.starts))
	}
	if s := ex.starts[0]; !s.GetSeparateStderr() || s.GetTty() {
		t.Fatalf("exec without -t sent %v", s)
	}
	if s := ex.starts[1]; !s.GetTty() || s.GetSeparateStderr() || s.GetTerm() != "xterm-test" {
		t.Fatalf("exec -t sent %v", s)
	}
}
