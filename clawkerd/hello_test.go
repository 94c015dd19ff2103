package clawkerd

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/clawker/clawker/internal/consts"
)

// TestHelloReportsResolvedUser: HelloAck carries the identity the user CMD
// runs as, which the CP's init steps use instead of probing.
func TestHelloReportsResolvedUser(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.User = &ExecUser{Uid: 1234, Gid: 2345, Home: "/home/dev"} })
	ack := ts.session(t).hello()
	u := ack.GetUser()
	if u == nil || u.GetUid() != 1234 || u.GetGid() != 2345 || u.GetHome() != "/home/dev" {
		t.Fatalf("HelloAck user = %v, want 1234:2345:/home/dev", u)
	}
	if ack.GetNoShell() {
		t.Fatal("no_shell reported although /bin/sh exists")
	}
}

func TestHelloReportsRootWhenNoUser(t *testing.T) {
	for _, tc := range []struct{ rootHome, want string }{{"", "/root"}, {"/var/root", "/var/root"}} {
		ts := startServer(t, func(c *Config) { c.RootHome = tc.rootHome })
		u := ts.session(t).hello().GetUser()
		if u == nil || u.GetUid() != 0 || u.GetGid() != 0 || u.GetHome() != tc.want {
			t.Fatalf("RootHome %q: HelloAck user = %v, want 0:0:%s", tc.rootHome, u, tc.want)
		}
	}
}

// TestHelloReportsNoShell: an image without an executable /bin/sh is
// reported, so the CP skips shell steps rather than failing them.
func TestHelloReportsNoShell(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "sh")
	if err := os.WriteFile(notExec, []byte("#!/nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "absent"), notExec, dir} {
		ts := startServer(t, func(c *Config) { c.ShellPath = path })
		if ack := ts.session(t).hello(); !ack.GetNoShell() || ack.GetUser() == nil {
			t.Fatalf("shell %s: HelloAck %v, want no_shell with a user", path, ack)
		}
	}
}

// TestParseOptionsRootHome: with CLAWKER_USER unset the user CMD keeps
// running as plain root (User nil) while root's passwd home is recorded
// for HelloAck.
func TestParseOptionsRootHome(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	if err := writeBootstrapFiles(dir, pki); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:/var/root:/bin/sh\ndev:x:1000:1001::/home/dev:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	group := filepath.Join(dir, "group")
	if err := os.WriteFile(group, []byte("root:x:0:\nwheel:x:10:root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{consts.EnvAgent: "dev"}
	args := []string{"--bootstrap-dir", dir, "--passwd", passwd, "--group", group}
	o, err := ParseOptions(args, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.User != nil || o.RootHome != "/var/root" {
		t.Fatalf("User %v RootHome %q, want nil and /var/root", o.User, o.RootHome)
	}
	env[consts.EnvUser] = "dev"
	if o, err = ParseOptions(args, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if o.User == nil || o.User.Uid != 1000 || o.User.Gid != 1001 || o.User.Home != "/home/dev" {
		t.Fatalf("User %+v, want 1000:1001:/home/dev", o.User)
	}
}

// TestHelloListsStaged: HelloAck lists the staging tree to depth two, an
// absent tree as empty, and refuses (nil: CP runs every step) what it
// cannot list faithfully.
func TestHelloListsStaged(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"home/.config", "hooks"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	must(t, writeFile(filepath.Join(dir, "git-identity"), "n\ne\n"))
	must(t, writeFile(filepath.Join(dir, "hooks", "pre-run"), "true\n"))
	ts := startServer(t, func(c *Config) { c.StagingDir = dir })
	got := ts.session(t).hello().GetStaged().GetPaths()
	want := []string{"git-identity", "home", "home/.config", "hooks", "hooks/pre-run"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("staged %v, want %v", got, want)
	}

	if st := listStaged(filepath.Join(dir, "absent")); st == nil || len(st.GetPaths()) != 0 {
		t.Fatalf("absent tree: %v, want an empty listing", st)
	}
	link := t.TempDir()
	must(t, os.Symlink(filepath.Join(dir, "hooks"), filepath.Join(link, "hooks")))
	if st := listStaged(link); st != nil {
		t.Fatalf("symlinked dir listed as %v, want nil", st)
	}
	big := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(big, "hooks"), 0o755))
	for i := 0; i <= stagedMax; i++ {
		must(t, writeFile(filepath.Join(big, "hooks", fmt.Sprint(i)), ""))
	}
	if st := listStaged(big); st != nil {
		t.Fatalf("oversized tree listed (%d paths), want nil", len(st.GetPaths()))
	}
}
