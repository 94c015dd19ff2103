package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/internal/testenv"
)

// kubeCLI runs `clawker --runtime kubernetes` against one namespace with
// its own home, as a user would (clawker hands the run to clawker-kube).
type kubeCLI struct {
	c        *cluster
	ns, home string
	env      []string // KEY=VALUE added to the environment
}

func (k *kubeCLI) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	full := append([]string{"--runtime", "kubernetes", "--kubeconfig", os.Getenv("KUBECONFIG"), "-n", k.ns, "--home", k.home}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(k.c.binDir, "clawker"), full...)
	cmd.Env = append(os.Environ(), k.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("clawker %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// must runs args and fails the test unless they exit 0.
func (k *kubeCLI) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := k.run(t, args...)
	if code != 0 {
		t.Fatalf("clawker %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// execTerminal drives `exec -it AGENT sh` on a real terminal (tmux): a
// keystroke reaches the agent's shell, whose answer and tty come back,
// and exec ends with the shell's exit code.
func (k *kubeCLI) execTerminal(t *testing.T, agent string) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is needed for terminal tests (scripts/install-deps.sh installs it)")
	}
	dir := t.TempDir()
	sock, status, errLog := filepath.Join(dir, "tmux.sock"), filepath.Join(dir, "status"), filepath.Join(dir, "stderr")
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	argv := []string{filepath.Join(k.c.binDir, "clawker"), "--runtime", "kubernetes", "--kubeconfig", os.Getenv("KUBECONFIG"),
		"-n", k.ns, "--home", k.home, "exec", "-it", agent, "--", "sh"}
	for i, a := range argv {
		argv[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	tmux("-f", "/dev/null", "set-option", "-g", "remain-on-exit", "on", ";",
		"new-session", "-d", "-s", "kube", "-x", "100", "-y", "30", "TERM=xterm "+strings.Join(argv, " ")+" 2>"+errLog+"; echo $? >"+status)
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", sock, "kill-server").Run() })
	screen := func(want string) {
		testenv.Eventually(t, time.Minute, "the terminal shows "+want, func() error {
			if got := tmux("capture-pane", "-p", "-t", "kube"); !strings.Contains(got, want) {
				b, _ := os.ReadFile(status) // set once clawker has exited
				e, _ := os.ReadFile(errLog)
				return fmt.Errorf("clawker exit status %q, stderr %q, screen:\n%s", b, e, got)
			}
			return nil
		})
	}
	screen("/ #") // capture-pane trims the prompt's trailing space
	tmux("send-keys", "-t", "kube", "echo in-pod $((6*7)); tty", "Enter")
	screen("in-pod 42")
	screen("/dev/pts/")
	tmux("send-keys", "-t", "kube", "exit 5", "Enter")
	testenv.Eventually(t, time.Minute, "exec -it exited", func() error {
		b, err := os.ReadFile(status)
		if err != nil || strings.TrimSpace(string(b)) != "5" {
			return fmt.Errorf("status %q (%v)", b, err)
		}
		return nil
	})
}

type agentRow struct {
	Agent       string `json:"agent"`
	ContainerID string `json:"container_id"`
	Trusted     bool   `json:"trusted"`
	Init        string `json:"init"`
	State       string `json:"state"`
}

func (k *kubeCLI) agents(t *testing.T) map[string]agentRow {
	t.Helper()
	var rows []agentRow
	if err := json.Unmarshal([]byte(k.must(t, "agents", "-a", "-o", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	out := map[string]agentRow{}
	for _, r := range rows {
		out[r.Agent] = r
	}
	return out
}

// TestCLIOnKubernetes drives the user's path end to end: cp up deploys
// the CP into a namespace, run creates agents, and agents, exec, an
// attached run, events, contain and rm work through the CP's admin API
// reached by a port-forward.
func TestCLIOnKubernetes(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	k := &kubeCLI{c: c, ns: ns, home: t.TempDir()}
	k.must(t, "init")
	k.must(t, "cp", "up", "--image", cpImage, "--clawkerd-image", clawkerdImage, "--volume", registryPV(t, c, ns))
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := k.run(t, "events", "--since", "10m")
			t.Logf("events:\n%s", out)
		}
	})

	ids := map[string]string{}
	for _, name := range []string{"alpha", "beta"} {
		ids[name] = strings.TrimSpace(k.must(t, "run", "-d", "--agent", name, "-e", "GREETING=hi", agentImage, "sleep", "3600"))
	}
	testenv.Eventually(t, 3*time.Minute, "both agents trusted and initialised", func() error {
		rows := k.agents(t)
		for name, id := range ids {
			r := rows[name]
			if r.ContainerID != id || !r.Trusted || r.Init != "completed" || r.State != "running" {
				return fmt.Errorf("%s: %+v (want ID %s); pod: %s", name, r, id, c.podStatus(context.Background(), ns, "clawker."+name))
			}
		}
		return nil
	})
	if out := k.must(t, "exec", "alpha", "--", "sh", "-c", "echo $GREETING from $CLAWKER_AGENT"); out != "hi from alpha\n" {
		t.Fatalf("exec in alpha: %q", out)
	}
	if _, _, code := k.run(t, "exec", "alpha", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Fatalf("exec exit code %d, want the command's 7", code)
	}
	k.execTerminal(t, "alpha")

	// Attached: the output streams back and run exits with the command's code.
	out, errOut, code := k.run(t, "run", "--rm", "--agent", "once", agentImage, "sh", "-c", "sleep 1; echo out from once; exit 3")
	if code != 3 || !strings.Contains(out, "out from once") || strings.Contains(out, `"component":"clawkerd"`) {
		t.Fatalf("attached run: exit %d (want 3)\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	testenv.Eventually(t, time.Minute, "run --rm deleted its pod", func() error {
		_, err := c.kube.CoreV1().Pods(ns).Get(context.Background(), "clawker.once", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod clawker.once still there (%v)", err)
		}
		return nil
	})

	if out := k.must(t, "contain", "beta", "--action", "kill", "--reason", "e2e"); !strings.Contains(out, "kill applied") {
		t.Fatalf("contain: %q", out)
	}
	testenv.Eventually(t, time.Minute, "beta's pod deleted by contain", func() error {
		if _, err := c.kube.CoreV1().Pods(ns).Get(context.Background(), "clawker.beta", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod clawker.beta still there (%v)", err)
		}
		return nil
	})
	ev := k.must(t, "events", "--since", "10m", "--agent", "beta")
	if !strings.Contains(ev, "agent_contained") {
		t.Fatalf("events for beta lack agent_contained:\n%s", ev)
	}

	if out := k.must(t, "rm", "--force", "alpha"); out != "alpha\n" {
		t.Fatalf("rm: %q", out)
	}
	if _, errOut, code := k.run(t, "rm", "alpha"); code != 4 || !strings.Contains(errOut, "no agent alpha") {
		t.Fatalf("rm of a removed agent: exit %d %q, want 4", code, errOut)
	}
	if _, errOut, code := k.run(t, "logs", "alpha"); code != 2 || !strings.Contains(errOut, "not available on the kubernetes runtime") {
		t.Fatalf("logs on kubernetes: exit %d %q", code, errOut)
	}
	k.must(t, "cp", "down", "--volumes")
	if _, errOut, code := k.run(t, "agents"); code != 3 || !strings.Contains(errOut, "cp up") {
		t.Fatalf("agents with no CP: exit %d %q, want 3 pointing at cp up", code, errOut)
	}
}
