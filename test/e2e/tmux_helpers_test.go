package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawker/clawker/internal/consts"
)

// tmuxPane is one clawker invocation on a real terminal: a detached tmux
// session on its own server socket (so parallel runs never meet), killed
// on cleanup.
type tmuxPane struct {
	t      *testing.T
	socket string
	name   string
	status string            // file the pane's shell writes clawker's exit status to
	shots  map[string]string // captures by name, for docs/screens
}

// tmuxRun starts clawker with args in a rows x cols tmux window. The pane
// stays after clawker exits so its screen can still be read.
func (e *env) tmuxRun(rows, cols int, args ...string) *tmuxPane {
	e.t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		e.t.Fatal("tmux is needed for terminal tests (scripts/install-deps.sh installs it)")
	}
	dir := e.t.TempDir()
	p := &tmuxPane{t: e.t, socket: filepath.Join(dir, "tmux.sock"), name: "clawker",
		status: filepath.Join(dir, "exit-status"), shots: map[string]string{}}
	// clawker's exit status goes to a file, written by the pane's shell:
	// tmux 3.3a leaves #{pane_dead_status} empty for some dead panes (about
	// 1 in 6 here), which looked like a clawker that never exits.
	quoted := []string{"sh", "-c", `"$@"; echo $? >"$0"`, p.status,
		"env", consts.EnvHome + "=" + e.home, "CLAWKER_LABELS=" + testLabel, "TERM=xterm", "GOTRACEBACK=all",
		filepath.Join(suite.binDir, "clawker")}
	quoted = append(quoted, args...)
	for i, a := range quoted {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	// One tmux call: the options are global before the pane exists, so a
	// clawker that exits at once still leaves its pane, and a goroutine
	// dump fits the history.
	p.tmux("-f", "/dev/null", "set-option", "-g", "remain-on-exit", "on", ";",
		"set-option", "-g", "history-limit", "50000", ";",
		"new-session", "-d", "-s", p.name, "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows), strings.Join(quoted, " "))
	e.t.Cleanup(func() { _ = exec.Command("tmux", "-S", p.socket, "kill-server").Run() })
	return p
}

func (p *tmuxPane) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", p.socket}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// keys types into the pane (tmux send-keys syntax: "Enter", "C-p", "Escape").
func (p *tmuxPane) keys(keys ...string) {
	p.t.Helper()
	p.tmux(append([]string{"send-keys", "-t", p.name}, keys...)...)
}

// literal types text as is.
func (p *tmuxPane) literal(text string) {
	p.t.Helper()
	p.tmux("send-keys", "-t", p.name, "-l", text)
}

func (p *tmuxPane) capture() string {
	p.t.Helper()
	return p.tmux("capture-pane", "-p", "-t", p.name)
}

// waitFor waits until the screen satisfies cond, failing with the screen.
func (p *tmuxPane) waitFor(what string, cond func(screen string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := p.capture()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("terminal never showed %s; screen:\n%s", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitText waits for text on the screen.
func (p *tmuxPane) waitText(text string) string {
	p.t.Helper()
	return p.waitFor(strconv.Quote(text), func(s string) bool { return strings.Contains(s, text) })
}

// shot records the current screen under name.
func (p *tmuxPane) shot(name string) {
	p.t.Helper()
	p.shots[name] = p.capture()
}

func (p *tmuxPane) resize(rows, cols int) {
	p.t.Helper()
	p.tmux("resize-window", "-t", p.name, "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows))
}

// exitStatus waits for clawker to exit and returns its status. A clawker
// that does not exit is sent SIGQUIT, and the test fails with its
// goroutine dump (GOTRACEBACK=all), so a hang names where it is stuck.
func (p *tmuxPane) exitStatus() int {
	p.t.Helper()
	status, ok := p.readStatus(60 * time.Second)
	if !ok {
		pid := p.clawkerPID()
		if pid != "" {
			_ = exec.Command("kill", "-QUIT", pid).Run()
			p.readStatus(10 * time.Second)
		}
		p.t.Fatalf("clawker (pid %q) did not exit; after SIGQUIT:\n%s", pid,
			p.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", p.name))
	}
	n, err := strconv.Atoi(status)
	if err != nil {
		p.t.Fatalf("exit status %q: %v", status, err)
	}
	return n
}

// readStatus waits up to d for the exit status file.
func (p *tmuxPane) readStatus(d time.Duration) (string, bool) {
	deadline := time.Now().Add(d)
	for {
		if b, err := os.ReadFile(p.status); err == nil && strings.HasSuffix(string(b), "\n") {
			return strings.TrimSpace(string(b)), true
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clawkerPID is the pid of the pane shell's child (clawker), or "".
func (p *tmuxPane) clawkerPID() string {
	sh := strings.TrimSpace(p.tmux("display-message", "-p", "-t", p.name, "#{pane_pid}"))
	b, _ := os.ReadFile(filepath.Join("/proc", sh, "task", sh, "children"))
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

// saveShots writes the captures to $CLAWKER_E2E_SCREENS (docs/screens
// when regenerating them), prefixed with prefix.
func (p *tmuxPane) saveShots(prefix string) {
	dir := os.Getenv("CLAWKER_E2E_SCREENS")
	if dir == "" {
		return
	}
	for name, s := range p.shots {
		path := filepath.Join(dir, fmt.Sprintf("%s-%s.txt", prefix, name))
		if err := os.WriteFile(path, []byte(strings.TrimRight(s, "\n")+"\n"), 0o644); err != nil {
			p.t.Errorf("save screen: %v", err)
		}
	}
}

// cursorX is the cursor's column.
func (p *tmuxPane) cursorX() string {
	p.t.Helper()
	return strings.TrimSpace(p.tmux("display-message", "-p", "-t", p.name, "#{cursor_x}"))
}

// runUntil types line (and Enter) until the screen shows text: for a
// shell that may not read the first try (a full-screen program that is
// just quitting can swallow it with its last key).
func (p *tmuxPane) runUntil(line, text string) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p.literal(line)
		p.keys("Enter")
		try := time.Now().Add(3 * time.Second)
		for time.Now().Before(try) {
			if strings.Contains(p.capture(), text) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("terminal never showed %q after typing %q; screen:\n%s", text, line, p.capture())
		}
	}
}
