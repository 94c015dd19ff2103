package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

// startTTYAgent runs a detached agent from the user image and waits until
// it is initialized (trusted, so exec is admitted).
func startTTYAgent(t *testing.T, e *env, name string) string {
	t.Helper()
	importUserImage(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	id := strings.TrimSpace(e.must("run", "-d", "--agent", name, userImage, "sleep", "3600").stdout)
	eventually(t, 90*time.Second, "agent initialized", func() error {
		if r, ok := findAgent(e.agents(), id); !ok || r.Init != "completed" || !r.Trusted {
			return fmt.Errorf("agent row %+v", r)
		}
		return nil
	})
	return id
}

// TestExecInteractiveTTY drives `clawker exec -it` on a real terminal
// (tmux): a shell as the agent's user in its WORKDIR, typed input, a
// window resize seen by stty, a full-screen program (busybox vi), and the
// shell's exit code as clawker's.
func TestExecInteractiveTTY(t *testing.T) {
	e := newEnv(t)
	id := startTTYAgent(t, e, "dev")
	p := e.tmuxRun(30, 100, "exec", "-it", "dev", "--", "sh")
	p.literal(`echo "who=$(id -u) at=$(pwd) tty=$(tty)"`)
	p.keys("Enter")
	p.waitText("who=1000 at=/app tty=/dev/pts/")
	p.literal("stty size")
	p.keys("Enter")
	p.waitText("30 100")
	p.shot("exec-shell")

	p.resize(40, 120)
	p.literal("clear; stty size")
	p.keys("Enter")
	p.waitText("40 120")
	p.shot("exec-resized")

	p.literal("vi /tmp/note")
	p.keys("Enter")
	p.waitFor("vi's empty-buffer tildes", func(s string) bool { return strings.Count(s, "\n~") >= 30 })
	p.literal("ihello from vi")
	p.waitFor("the text typed", func(s string) bool { return strings.Contains(s, "hello from vi") && p.cursorX() == "13" })
	// vi takes ESC followed at once by ':' for a key sequence: wait for
	// ESC's own effect (the cursor steps back onto the last character).
	p.keys("Escape")
	p.waitFor("vi's command mode", func(string) bool { return p.cursorX() == "12" })
	p.shot("exec-vi")
	p.literal(":wq")
	p.keys("Enter")
	p.literal("clear; cat /tmp/note; echo done-$((40+2))")
	p.keys("Enter")
	p.waitText("done-42")
	if s := p.capture(); !strings.Contains(s, "hello from vi") {
		t.Fatalf("vi did not write the file; screen:\n%s", s)
	}
	// Ctrl-C is a key on the remote terminal (raw mode), not a signal that
	// ends clawker: the shell survives it.
	p.literal("sleep 599")
	p.keys("Enter")
	// Only once sleep runs: a Ctrl-C that beats the fork reaches the
	// shell, and the sleep then starts anyway.
	eventually(t, 30*time.Second, "sleep 599 running", func() error {
		if out, _ := execAs(t, id, "0", "sh", "-c", "ps -o args | grep -q '^sleep 599$' && echo RUNNING"); !strings.Contains(out, "RUNNING") {
			return fmt.Errorf("ps: %q", out)
		}
		return nil
	})
	p.keys("C-c")
	p.literal("echo still-$((1+1))-here")
	p.keys("Enter")
	p.waitText("still-2-here")
	p.literal("exit 3")
	p.keys("Enter")
	if code := p.exitStatus(); code != 3 {
		t.Fatalf("clawker exec -it exit status %d, want 3; screen:\n%s", code, p.capture())
	}
	p.saveShots("exec-it")
}

// TestExecStreamsLikeDockerExec: without -t, stdout and stderr reach
// clawker's own stdout and stderr, the exit code passes through, and
// binary output arrives byte for byte.
func TestExecStreamsLikeDockerExec(t *testing.T) {
	e := newEnv(t)
	startTTYAgent(t, e, "dev")
	r := e.clawker("exec", "dev", "--", "sh", "-c", "echo to-out; echo to-err >&2; echo more-out; exit 42")
	if r.code != 42 || r.stdout != "to-out\nmore-out\n" || r.stderr != "to-err\n" {
		t.Fatalf("want stdout/stderr apart and exit 42, got %s", r)
	}

	// 24 MiB of random bytes: stdout must hash to what the agent hashed.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(suite.binDir, "clawker"), "exec", "dev", "--", "sh", "-c",
		"head -c 25165824 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 && cat /tmp/blob")
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+e.home, "CLAWKER_LABELS="+testLabel)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("binary exec: %v: %s", err, errb.String())
	}
	sum := sha256.Sum256(out.Bytes())
	fields := strings.Fields(errb.String())
	if out.Len() != 25165824 || len(fields) == 0 || fields[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("binary output: %d bytes, sha256 %x; agent said %q", out.Len(), sum, errb.String())
	}
}
