package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

func TestSecretsStepInPlan(t *testing.T) {
	names := func(p []step) (out []string) {
		for _, s := range p {
			out = append(out, s.name)
		}
		return out
	}
	with := InitTarget{Initialized: true, Staged: &clawkerdv1.StagedInputs{Paths: []string{"secrets", "secrets/tok"}}}
	if got := names(buildPlan(with)); !reflect.DeepEqual(got, []string{StepSecrets, StepPreRun, StepAgentReady}) {
		t.Fatalf("plan with staged secrets: %v", got)
	}
	without := InitTarget{Initialized: true, Staged: &clawkerdv1.StagedInputs{Paths: []string{"hooks"}}}
	if got := names(buildPlan(without)); !reflect.DeepEqual(got, []string{StepPreRun, StepAgentReady}) {
		t.Fatalf("plan without secrets: %v", got)
	}
	with.CmdRunning = true // a reconnect: the tmpfs is already filled
	if got := names(buildPlan(with)); got != nil {
		t.Fatalf("reconnect plan: %v", got)
	}
	if s := secretsStep(); !s.exitOnNonZero || s.asUser {
		t.Fatalf("secrets step must run as root and stop the agent on failure: %+v", s)
	}
}

func TestSecretsScript(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	if os.Getuid() != 0 {
		t.Skip("the secrets step runs as root; it takes the dir back with chown 0:0")
	}
	stage, dst := t.TempDir(), filepath.Join(t.TempDir(), "secrets")
	u := self(t)
	script := strings.ReplaceAll(secretsScript(u), SecretsDir, dst)
	if out, code := runScript(t, script, stage); code != 0 {
		t.Fatalf("no staged secrets must be a no-op: %d %s", code, out)
	}
	writeFile(t, filepath.Join(stage, "secrets", "tok"), "s3cret", 0o400)
	writeFile(t, filepath.Join(stage, "secrets", ".npmrc"), "//reg/:_authToken=x", 0o400)
	if out, code := runScript(t, script, stage); code == 0 || !strings.Contains(out, "is not mounted") {
		t.Fatalf("missing tmpfs must fail: %d %s", code, out)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, code := runScript(t, script, stage); code != 0 {
		t.Fatalf("install: %d %s", code, out)
	}
	for name, want := range map[string]string{"tok": "s3cret", ".npmrc": "//reg/:_authToken=x"} {
		st, err := os.Stat(filepath.Join(dst, name))
		if err != nil || st.Mode().Perm() != 0o400 || readFile(t, filepath.Join(dst, name)) != want {
			t.Fatalf("%s: %v %v", name, st, err)
		}
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o500 {
		t.Fatalf("dir mode %v", st.Mode())
	}
	_ = os.Chmod(dst, 0o700) // let TempDir cleanup remove it
}

// TestSecretsScriptPlantedLinks: the agent user owned /run/secrets on the
// previous start and may have planted links there (or in a restaged dir);
// the root step must neither write through them nor chown their targets.
func TestSecretsScriptPlantedLinks(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the secrets step runs as root; chown needs it")
	}
	stage, dst, outside := t.TempDir(), filepath.Join(t.TempDir(), "secrets"), t.TempDir()
	target := filepath.Join(outside, "passwd")
	writeFile(t, target, "root:x:0:0::/root:/bin/sh\n", 0o644)
	other := filepath.Join(outside, "other")
	writeFile(t, other, "not a secret", 0o600)
	writeFile(t, filepath.Join(stage, "secrets", "tok"), "s3cret", 0o400)
	if err := os.Symlink(other, filepath.Join(stage, "secrets", "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"tok", "linked", ".hidden"} {
		if err := os.Symlink(target, filepath.Join(dst, n)); err != nil {
			t.Fatal(err)
		}
	}
	const uid, gid = 4242, 4243
	u := userInfo{uid: uid, gid: gid, home: filepath.Join(t.TempDir(), "home")}
	script := strings.ReplaceAll(secretsScript(u), SecretsDir, dst)
	if out, code := runScript(t, script, stage); code != 0 {
		t.Fatalf("install: %d %s", code, out)
	}
	for _, p := range []string{target, other} {
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 || sys.Gid != 0 {
			t.Fatalf("%s chowned to %d:%d through a planted link", p, sys.Uid, sys.Gid)
		}
	}
	if got := readFile(t, target); got != "root:x:0:0::/root:/bin/sh\n" {
		t.Fatalf("target written through a planted link: %q", got)
	}
	ents, err := os.ReadDir(dst)
	if err != nil || len(ents) != 1 || ents[0].Name() != "tok" {
		t.Fatalf("dst holds %v (%v), want only tok", ents, err)
	}
	st, err := os.Lstat(filepath.Join(dst, "tok"))
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o400 || readFile(t, filepath.Join(dst, "tok")) != "s3cret" {
		t.Fatalf("tok: %v %v", st, err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != uid || sys.Gid != gid {
		t.Fatalf("tok owned by %d:%d", sys.Uid, sys.Gid)
	}
	dst0, _ := os.Lstat(dst)
	if sys := dst0.Sys().(*syscall.Stat_t); sys.Uid != uid || dst0.Mode().Perm() != 0o500 {
		t.Fatalf("dir %v owned by %d", dst0.Mode(), sys.Uid)
	}
}
