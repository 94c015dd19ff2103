package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

// nobody is the unprivileged agent user of these tests.
const nobody = 65534

// runStepAsClawkerd runs a plan step the way clawkerd spawns it: the
// stage's argv, cwd and (when non-zero) uid/gid, with the staging dir
// redirected to stage.
func runStepAsClawkerd(t *testing.T, name string, u userInfo, stage string) {
	t.Helper()
	var st *step
	for _, s := range buildPlan(InitTarget{}) {
		if s.name == name {
			st = &s
			break
		}
	}
	if st == nil {
		t.Fatalf("no step %s in the plan", name)
	}
	ps := stageFor(*st, u)
	argv := append([]string(nil), ps.GetArgv()...)
	argv[2] = strings.ReplaceAll(argv[2], consts.StagingDir, stage)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = ps.GetCwd()
	if ps.GetUid() != 0 || ps.GetGid() != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: ps.GetUid(), Gid: ps.GetGid(), Groups: []uint32{}}}
	}
	out, _ := cmd.CombinedOutput() // a refused write may fail the step: only the target matters
	t.Logf("%s: %s", name, out)
}

// hostileHome lays out a root-owned "system" dir with a passwd file, the
// staging tree, and a home owned by nobody, all traversable by nobody.
func hostileHome(t *testing.T) (sys, stage string, u userInfo) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the steps as another user")
	}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sys, stage = filepath.Join(base, "etc"), filepath.Join(base, "stage")
	writeFile(t, filepath.Join(sys, "passwd"), "root:x:0:0:root:/root:/bin/sh\n", 0o644)
	writeFile(t, filepath.Join(stage, "known_hosts"), "evil.example ssh-ed25519 AAAA\n", 0o444)
	writeFile(t, filepath.Join(stage, "git-identity"), "Mallory\nm@example\n", 0o444)
	writeFile(t, filepath.Join(stage, "home", ".config", "planted"), "x", 0o444)
	home := filepath.Join(base, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return sys, stage, userInfo{uid: nobody, gid: nobody, home: home}
}

// assertSysUntouched fails if anything in sys changed: passwd's content
// and owner, and no new entry.
func assertSysUntouched(t *testing.T, sys string) {
	t.Helper()
	if got := readFile(t, filepath.Join(sys, "passwd")); got != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Fatalf("passwd written through a symlink: %q", got)
	}
	fi, err := os.Lstat(filepath.Join(sys, "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm() != 0o644 {
		t.Fatalf("passwd owner/mode changed through a symlink: %d:%d %v", st.Uid, st.Gid, fi.Mode())
	}
	ents, err := os.ReadDir(sys)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("files created in the target dir through a symlink: %v", ents)
	}
}

func symlinkAsUser(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Dir(link), nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// TestRootStepsDoNotFollowPlantedSymlinks: an agent that planted symlinks
// in its home (a hook, or a home volume reused by a new container) must
// not turn the ssh, git or config step into a write or chown of a file it
// cannot write itself — neither through the last component
// (known_hosts -> /etc/passwd) nor through a directory (~/.ssh -> /etc).
func TestRootStepsDoNotFollowPlantedSymlinks(t *testing.T) {
	cases := []struct {
		name, step string
		plant      func(sys, home string) (target, link string)
	}{
		{"ssh known_hosts -> passwd", StepSSH, func(sys, home string) (string, string) {
			return filepath.Join(sys, "passwd"), filepath.Join(home, ".ssh", "known_hosts")
		}},
		{"ssh dir -> etc", StepSSH, func(sys, home string) (string, string) {
			return sys, filepath.Join(home, ".ssh")
		}},
		{"gitconfig -> passwd", StepGit, func(sys, home string) (string, string) {
			return filepath.Join(sys, "passwd"), filepath.Join(home, ".gitconfig")
		}},
		{"config dir -> etc", StepConfig, func(sys, home string) (string, string) {
			return sys, filepath.Join(home, ".config")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.step == StepGit {
				if _, err := exec.LookPath("git"); err != nil {
					t.Skip("no git")
				}
			}
			sys, stage, u := hostileHome(t)
			target, link := tc.plant(sys, u.home)
			if link == filepath.Join(u.home, ".ssh", "known_hosts") {
				if err := os.Mkdir(filepath.Join(u.home, ".ssh"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			symlinkAsUser(t, target, link)
			runStepAsClawkerd(t, tc.step, u, stage)
			assertSysUntouched(t, sys)
		})
	}
}

// TestRootStepsStillWorkAsUser: the steps as the user still do their job
// in an ordinary home, and a home the user cannot write is a skip.
func TestRootStepsStillWorkAsUser(t *testing.T) {
	_, stage, u := hostileHome(t)
	runStepAsClawkerd(t, StepSSH, u, stage)
	runStepAsClawkerd(t, StepConfig, u, stage)
	if got := readFile(t, filepath.Join(u.home, ".ssh", "known_hosts")); got != "evil.example ssh-ed25519 AAAA\n" {
		t.Fatalf("known_hosts = %q", got)
	}
	fi, err := os.Stat(filepath.Join(u.home, ".config", "planted"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
		t.Fatalf("copied file owned by %d, want the user", st.Uid)
	}
	if _, err := exec.LookPath("git"); err == nil {
		runStepAsClawkerd(t, StepGit, u, stage)
		if got := readFile(t, filepath.Join(u.home, ".gitconfig")); !strings.Contains(got, "Mallory") {
			t.Fatalf(".gitconfig = %q", got)
		}
	}
	// A home the user cannot write (a numeric user whose home is /) is
	// skipped with success, not an init failure.
	ro := userInfo{uid: nobody, gid: nobody, home: filepath.Dir(stage)}
	for _, name := range []string{StepSSH, StepConfig} {
		var st step
		for _, s := range buildPlan(InitTarget{}) {
			if s.name == name {
				st = s
			}
		}
		ps := stageFor(st, ro)
		cmd := exec.Command(ps.GetArgv()[0], ps.GetArgv()[1], strings.ReplaceAll(ps.GetArgv()[2], consts.StagingDir, stage))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "step skipped") {
			t.Fatalf("%s with an unwritable home: %v %s", name, err, out)
		}
	}
}
