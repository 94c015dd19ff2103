package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// rootStepAndTerminalAttacks are issue 13 §5–6 rows of the matrix. Their
// agents are made before m.rebaseline, so the registry check sees only
// what the attack itself does.
//
//   - a post-init hook replaces ~/.ssh with a symlink to /etc and fails
//     (no init marker); the restart's ssh step must not write /etc;
//   - a hook prints an OSC 52 clipboard write and a cursor sequence; they
//     must reach neither `run` progress nor `clawker events` raw.
func rootStepAndTerminalAttacks(t *testing.T, e *env, m *matrix) []hostileAttack {
	t.Helper()
	importUserImage(t)
	hostHome := t.TempDir() // the CLI stages $HOME/.ssh/known_hosts
	if err := os.MkdirAll(filepath.Join(hostHome, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostHome, ".ssh", "known_hosts"), []byte("evil.example ssh-ed25519 AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plant := projectDir(t, map[string][]string{"post-init": {
		`[ -L "$HOME/.ssh" ] && exit 0`,
		`rm -rf "$HOME/.ssh" && ln -s /etc "$HOME/.ssh"`,
		"exit 1",
	}})
	r := e.clawkerIn(plant, []string{"HOME=" + hostHome}, "run", "-d", "--project", "hp", "--agent", "mallory",
		"--project-dir", plant, userImage, "sleep", "3600")
	if r.code != 0 {
		t.Fatalf("run mallory: %s", r)
	}
	mallory := strings.TrimSpace(r.stdout)
	waitExited(t, mallory) // the failed hook ends the container, marker unwritten

	osc := projectDir(t, map[string][]string{"post-init": {`printf '\033]52;c;cHduZWQ=\007\033[2K\033[1Aforged\n'`, "exit 3"}})
	progress := e.clawkerIn(osc, nil, "run", "--project", "hp", "--agent", "osc", "--project-dir", osc, agentImage, "true")
	m.rebaseline()

	symlink := hostileAttack{name: "known-hosts-dir-symlink-via-restart", surface: "init", from: "mallory",
		layer: "init step as the user",
		run: func(name string) outcome {
			if _, err := suite.docker.ContainerStart(context.Background(), mallory, mobyclient.ContainerStartOptions{}); err != nil {
				t.Fatalf("restart mallory: %v", err)
			}
			eventually(t, 90*time.Second, "mallory's restart ran its init plan", func() error {
				if !pathExists(t, mallory, "/etc/passwd") {
					return errors.New("container not readable yet")
				}
				return nil
			})
			// The ssh step has run once the restart's plan ended: a second
			// terminal init event for mallory.
			eventually(t, 90*time.Second, "mallory's second init outcome", func() error {
				out := e.must("events", "--since", "1h", "--project", "hp").stdout
				done := 0
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "hp/mallory") && (strings.Contains(l, "init_failed") || strings.Contains(l, "init_completed")) {
						done++
					}
				}
				if done < 2 {
					return fmt.Errorf("%d init outcomes so far", done)
				}
				return nil
			})
			o := outcome{Attack: name, Mode: "init", Stage: "init"}
			if pathExists(t, mallory, "/etc/known_hosts") {
				o.OK, o.Detail = true, "/etc/known_hosts written through ~/.ssh -> /etc"
			}
			return o
		},
		want: func(o outcome) error { return nil }}

	escape := hostileAttack{name: "osc52-in-hook-output", surface: "cli", from: "osc",
		layer: "termSafe",
		run: func(name string) outcome {
			ev := e.must("events", "--since", "1h", "--project", "hp")
			o := outcome{Attack: name, Mode: "terminal", Stage: "print"}
			for what, out := range map[string]string{"run progress": progress.stderr, "events": ev.stdout} {
				if strings.ContainsRune(out, 0x1b) || strings.Contains(out, "\x07") {
					o.OK, o.Detail = true, what+" printed a raw escape sequence"
				}
			}
			if !strings.Contains(ev.stdout+progress.stderr, `\x1b]52`) {
				o.Detail += "; the hook's output was not observed escaped"
			}
			return o
		},
		want: func(o outcome) error {
			if strings.Contains(o.Detail, "not observed") {
				return errors.New(o.Detail)
			}
			return nil
		}}
	return []hostileAttack{symlink, escape}
}

// clawkerIn is e.clawker run from dir with extra environment.
func (e *env) clawkerIn(dir string, extraEnv []string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(suite.binDir, "clawker"), args...)
	cmd.Env = append(append(os.Environ(), consts.EnvHome+"="+e.home, "CLAWKER_LABELS="+testLabel), extraEnv...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("clawker %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func waitExited(t *testing.T, id string) {
	t.Helper()
	eventually(t, 90*time.Second, "container exited", func() error {
		if s := inspect(t, id).State; s.Running {
			return fmt.Errorf("state %s", s.Status)
		}
		return nil
	})
}
