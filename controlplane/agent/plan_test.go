package agent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/consts"
)

func TestBuildPlan(t *testing.T) {
	names := func(p []step) []string {
		var out []string
		for _, s := range p {
			out = append(out, s.name)
		}
		return out
	}
	cases := []struct {
		t    InitTarget
		want []string
	}{
		{InitTarget{}, []string{StepConfig, StepGit, StepSSH, StepPostInit, StepPreRun, StepAgentReady}},
		{InitTarget{Initialized: true}, []string{StepPreRun, StepAgentReady}},
		{InitTarget{Initialized: true, CmdRunning: true}, nil},
		{InitTarget{CmdRunning: true}, []string{StepConfig, StepGit, StepSSH, StepPostInit}},
	}
	for _, c := range cases {
		if got := names(buildPlan(c.t)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.t, got, c.want)
		}
	}
	for _, s := range buildPlan(InitTarget{}) {
		hook := s.name == StepPostInit || s.name == StepPreRun
		// Every shell step runs as the user: none may write the home as root.
		if hook != s.exitOnNonZero || (s.kind == kindShell) != s.asUser {
			t.Errorf("step %s: exitOnNonZero=%v asUser=%v", s.name, s.exitOnNonZero, s.asUser)
		}
		if s.markInitialized != (s.name == StepPostInit) {
			t.Errorf("step %s: markInitialized=%v", s.name, s.markInitialized)
		}
	}
}

// runScript runs a plan script with the staging dir redirected to stage.
func runScript(t *testing.T, script, stage string, env ...string) (string, int) {
	t.Helper()
	script = strings.ReplaceAll(script, consts.StagingDir, stage)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	default:
		t.Fatal(err)
		return "", -1
	}
}

func self(t *testing.T) userInfo {
	return userInfo{uid: uint32(os.Getuid()), gid: uint32(os.Getgid()), home: filepath.Join(t.TempDir(), "home")}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestConfigScriptCopiesAbsentOnly(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	stage := t.TempDir()
	u := self(t)
	if out, code := runScript(t, configScript(u), stage); code != 0 {
		t.Fatalf("absent staging dir must be a no-op success: %d %s", code, out)
	}
	writeFile(t, filepath.Join(stage, "home", ".bashrc"), "staged", 0o644)
	writeFile(t, filepath.Join(stage, "home", ".config", "tool", "cfg"), "cfg", 0o600)
	writeFile(t, filepath.Join(u.home, ".bashrc"), "user's own", 0o644)
	for i := 0; i < 2; i++ { // idempotent
		if out, code := runScript(t, configScript(u), stage); code != 0 {
			t.Fatalf("run %d: %d %s", i, code, out)
		}
	}
	if got := readFile(t, filepath.Join(u.home, ".bashrc")); got != "user's own" {
		t.Fatalf("existing file overwritten: %q", got)
	}
	if got := readFile(t, filepath.Join(u.home, ".config", "tool", "cfg")); got != "cfg" {
		t.Fatalf("nested file not copied: %q", got)
	}
}

func TestSSHScriptAppendsMissingLines(t *testing.T) {
	stage := t.TempDir()
	u := self(t)
	if _, code := runScript(t, sshScript(u), stage); code != 0 {
		t.Fatal("absent known_hosts must be a no-op success")
	}
	writeFile(t, filepath.Join(stage, "known_hosts"), "github.com ssh-ed25519 AAA\ngitlab.com ssh-rsa BBB\n", 0o644)
	writeFile(t, filepath.Join(u.home, ".ssh", "known_hosts"), "gitlab.com ssh-rsa BBB", 0o644) // no trailing newline
	for i := 0; i < 2; i++ {
		if out, code := runScript(t, sshScript(u), stage); code != 0 {
			t.Fatalf("run %d: %d %s", i, code, out)
		}
	}
	got := readFile(t, filepath.Join(u.home, ".ssh", "known_hosts"))
	if got != "gitlab.com ssh-rsa BBB\ngithub.com ssh-ed25519 AAA\n" {
		t.Fatalf("known_hosts = %q", got)
	}
}

func TestGitScript(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	stage := t.TempDir()
	u := self(t)
	if err := os.MkdirAll(u.home, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(stage, "git-identity"), "Ada Lovelace\nada@example.com\n", 0o644)
	if out, code := runScript(t, gitScript(u), stage, "GIT_CONFIG_NOSYSTEM=1"); code != 0 {
		t.Fatalf("%d %s", code, out)
	}
	cfg := readFile(t, filepath.Join(u.home, ".gitconfig"))
	if !strings.Contains(cfg, "Ada Lovelace") || !strings.Contains(cfg, "ada@example.com") {
		t.Fatalf(".gitconfig = %q", cfg)
	}
	// An identity the user set is kept.
	writeFile(t, filepath.Join(u.home, ".gitconfig"), "[user]\n\tname = Someone Else\n", 0o644)
	if _, code := runScript(t, gitScript(u), stage, "GIT_CONFIG_NOSYSTEM=1"); code != 0 {
		t.Fatal("second run failed")
	}
	cfg = readFile(t, filepath.Join(u.home, ".gitconfig"))
	if !strings.Contains(cfg, "Someone Else") || strings.Contains(cfg, "Ada Lovelace") {
		t.Fatalf(".gitconfig = %q", cfg)
	}
}

func TestHookScriptExitCode(t *testing.T) {
	stage := t.TempDir()
	u := self(t)
	if _, code := runScript(t, hookScript(StagingHookPost)(u), stage); code != 0 {
		t.Fatal("absent hook must succeed")
	}
	writeFile(t, filepath.Join(stage, "hooks", "post-init"), "#!/bin/sh\necho \"home=$HOME\"\nexit 7\n", 0o755)
	out, code := runScript(t, hookScript(StagingHookPost)(u), stage)
	if code != 7 || !strings.Contains(out, "home="+u.home) {
		t.Fatalf("hook: code %d out %q", code, out)
	}
	// A non-executable hook runs through sh.
	writeFile(t, filepath.Join(stage, "hooks", "pre-run"), "exit 4\n", 0o644)
	if _, code := runScript(t, hookScript(StagingHookPreRun)(u), stage); code != 4 {
		t.Fatalf("non-executable hook: code %d", code)
	}
}

func TestProbeScript(t *testing.T) {
	cases := map[string]string{
		"CLAWKER_USER=root":         "0:0:/root",
		"CLAWKER_USER=":             "0:0:/root",
		"CLAWKER_USER=12345:678":    "12345:678:/",
		"CLAWKER_USER=nosuchuser99": "0:0:/root",
	}
	for env, want := range cases {
		out, code := runScript(t, probeScript, t.TempDir(), env)
		if code != 0 {
			t.Fatalf("%s: exit %d %s", env, code, out)
		}
		u, err := parseProbe(out)
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		got := strings.TrimSpace(out)
		if got != want {
			t.Fatalf("%s: probe %q want %q (parsed %+v)", env, got, want, u)
		}
	}
}

// TestStepInputsMatchScripts: a step is skipped on its input's absence
// only if that input is what its script tests; the two must not drift.
func TestStepInputsMatchScripts(t *testing.T) {
	for _, st := range buildPlan(InitTarget{}) {
		if st.kind != kindShell {
			continue
		}
		if st.input == "" {
			t.Fatalf("step %s has no staged input", st.name)
		}
		if path := consts.StagingDir + "/" + st.input; !strings.Contains(st.script(rootUser), path) {
			t.Fatalf("step %s: input %s not tested by its script", st.name, path)
		}
		if st.inputAbsent(nil) {
			t.Fatalf("step %s skipped although staging was not reported", st.name)
		}
		if !st.inputAbsent(map[string]bool{}) || st.inputAbsent(map[string]bool{st.input: true}) {
			t.Fatalf("step %s: inputAbsent wrong", st.name)
		}
	}
	if s := stagedSet(&clawkerdv1.StagedInputs{}); s == nil || len(s) != 0 {
		t.Fatalf("empty listing must be an empty, non-nil set: %v", s)
	}
}
