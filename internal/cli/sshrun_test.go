package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// imageFiles fakes CopyFromContainer over a created container's files.
type imageFiles map[string]string

func (f imageFiles) CopyFromContainer(_ context.Context, _ string, o mobyclient.CopyFromContainerOptions) (mobyclient.CopyFromContainerResult, error) {
	data, ok := f[o.SourcePath]
	if !ok {
		return mobyclient.CopyFromContainerResult{}, cerrdefs.ErrNotFound
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Base(o.SourcePath), Mode: 0o644, Size: int64(len(data))})
	_, _ = io.WriteString(tw, data)
	_ = tw.Close()
	return mobyclient.CopyFromContainerResult{Content: io.NopCloser(&buf)}, nil
}

func TestSSHConfigFiles(t *testing.T) {
	debian := "Include /etc/ssh/ssh_config.d/*.conf\n\nHost *\n    SendEnv LANG LC_*\n"
	old := "Host *\n    SendEnv LANG LC_*\n"
	cases := []struct {
		name  string
		image imageFiles
		main  string // the ssh_config written, "" none
	}{
		{"includes drop-ins", imageFiles{sshConfigPath: debian}, ""},
		{"quoted, indented include", imageFiles{sshConfigPath: "# x\n  include \"/etc/ssh/ssh_config.d/*.conf\"\n"}, ""},
		{"no ssh installed", imageFiles{}, ""},
		{"old ssh_config", imageFiles{sshConfigPath: old}, old},
		{"commented-out include", imageFiles{sshConfigPath: "#Include /etc/ssh/ssh_config.d/*.conf\n"}, "#Include"},
		// An Include inside a Host block reads the dir for those hosts only.
		{"include under a Host", imageFiles{sshConfigPath: "Host *.corp\n    Include /etc/ssh/ssh_config.d/*.conf\n"}, "Host *.corp"},
	}
	for _, c := range cases {
		files, err := sshConfigFiles(context.Background(), c.image, "id")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(files) == 0 || files[0].path != sshDropInPath || files[0].mode != 0o644 ||
			!strings.Contains(string(files[0].data), "ProxyCommand "+consts.ClawkerdPath+" proxy-connect '%h' %p") {
			t.Fatalf("%s: drop-in %+v", c.name, files)
		}
		switch {
		case c.main == "" && len(files) != 1:
			t.Errorf("%s: rewrote ssh_config: %q", c.name, files[1].data)
		case c.main != "" && (len(files) != 2 || files[1].path != sshConfigPath || files[1].mode != 0o644):
			t.Errorf("%s: want ssh_config rewritten, got %+v", c.name, files)
		case c.main != "":
			// The drop-in's block comes first (applies to every host),
			// the image's config follows unchanged.
			body := string(files[1].data)
			if !strings.HasPrefix(body, string(sshDropIn)) || !strings.HasSuffix(body, c.image[sshConfigPath]) ||
				!strings.Contains(body, "\n"+c.main) {
				t.Errorf("%s: ssh_config %q", c.name, files[1].data)
			}
		}
	}
}

// A Docker error other than not-found fails the run rather than starting
// an agent whose ssh cannot get out.
func TestSSHConfigFilesError(t *testing.T) {
	if _, err := sshConfigFiles(context.Background(), failingReader{}, "id"); err == nil {
		t.Fatal("want error")
	}
}

type failingReader struct{}

func (failingReader) CopyFromContainer(context.Context, string, mobyclient.CopyFromContainerOptions) (mobyclient.CopyFromContainerResult, error) {
	return mobyclient.CopyFromContainerResult{}, io.ErrUnexpectedEOF
}

// The real ssh client reads the drop-in as intended: its ProxyCommand for
// any host, and a user's config read first overrides it.
func TestSSHDropInParsesWithOpenSSH(t *testing.T) {
	dir := t.TempDir()
	dropIn := filepath.Join(dir, "99-clawker-egress.conf")
	if err := os.WriteFile(dropIn, sshDropIn, 0o644); err != nil {
		t.Fatal(err)
	}
	user := filepath.Join(dir, "user.conf")
	if err := os.WriteFile(user, []byte("Host mine.example\n    ProxyCommand none\nMatch all\nInclude "+dropIn+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eval := func(host string) string {
		for _, l := range strings.Split(sshEffectiveConfig(t, user, host), "\n") {
			if v, ok := strings.CutPrefix(l, "proxycommand "); ok {
				return v
			}
		}
		return ""
	}
	if got := eval("github.com"); got != consts.ClawkerdPath+" proxy-connect '%h' %p" {
		t.Errorf("github.com: proxycommand %q", got)
	}
	if got := eval("mine.example"); got != "" && got != "none" {
		t.Errorf("user override ignored: proxycommand %q", got)
	}
}

// An ssh_config rewritten for an image that does not read ssh_config.d
// gives every host the ProxyCommand, with no Include (OpenSSH before 7.3
// rejects it), and the image's own options still apply to every host.
func TestSSHRewrittenConfigParsesWithOpenSSH(t *testing.T) {
	files, err := sshConfigFiles(context.Background(), imageFiles{sshConfigPath: "SendEnv LANG\nHost *.internal\n    Port 2222\n"}, "id")
	if err != nil || len(files) != 2 {
		t.Fatalf("files %+v, err %v", files, err)
	}
	if strings.Contains(strings.ToLower(string(files[1].data)), "include") {
		t.Fatalf("rewritten ssh_config uses Include:\n%s", files[1].data)
	}
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(cfg, files[1].data, 0o644); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string][]string{
		"github.com":  {"proxycommand " + consts.ClawkerdPath + " proxy-connect '%h' %p", "sendenv LANG", "port 22"},
		"db.internal": {"proxycommand " + consts.ClawkerdPath + " proxy-connect '%h' %p", "sendenv LANG", "port 2222"},
	} {
		out := sshEffectiveConfig(t, cfg, host)
		for _, w := range want {
			if !strings.Contains(out, "\n"+w+"\n") {
				t.Errorf("%s: no %q in ssh -G output", host, w)
			}
		}
	}
}

// sshEffectiveConfig is what the real ssh client makes of cfg for host
// (ssh -G). scripts/install-deps.sh installs the client, so CI has it.
func sshEffectiveConfig(t *testing.T, cfg, host string) string {
	t.Helper()
	ssh, err := exec.LookPath("ssh")
	if err != nil {
		testenv.Unavailable(t, "no ssh client on this host (scripts/install-deps.sh installs openssh-client)")
	}
	out, err := exec.Command(ssh, "-G", "-F", cfg, host).Output()
	if err != nil {
		t.Fatalf("ssh -G %s: %v", host, err)
	}
	return string(out)
}
