package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/testenv"
)

// symlinkImage is busybox with /etc/ssh and /etc/ssl/certs as symlinks to
// directories elsewhere (a relocated /etc/ssh; Fedora's /etc/ssl/certs ->
// /etc/pki/tls/certs), an ssh_config without the Include of
// ssh_config.d, and a CA bundle.
const symlinkImage = "clawker-e2e-symlinks:latest"

const symlinkSSHConfig = "SendEnv LANG\n"
const symlinkCABundle = "# the image's own trust bundle\n"

func importSymlinkImage(t *testing.T) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	writeBaseImage(t, tw)
	for _, d := range []string{"usr/etc/", "usr/etc/ssh/", "etc/pki/", "etc/pki/tls/", "etc/pki/tls/certs/", "etc/ssl/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{{"etc/ssh", "/usr/etc/ssh"}, {"etc/ssl/certs", "/etc/pki/tls/certs"}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: l[0], Linkname: l[1], Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{"usr/etc/ssh/ssh_config": symlinkSSHConfig, "etc/pki/tls/certs/ca-certificates.crt": symlinkCABundle} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := suite.docker.ImageImport(context.Background(), mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, symlinkImage,
		mobyclient.ImageImportOptions{Changes: []string{`CMD ["sh"]`, "ENV PATH=/bin", "LABEL " + testLabel}})
	if err != nil {
		t.Fatalf("import %s: %v", symlinkImage, err)
	}
	_, _ = io.Copy(io.Discard, res)
	_ = res.Close()
}

// TestRunImageWithSymlinkedEtcDirs: clawker run writes the ssh client
// config and the egress CA through an image's symlinked /etc/ssh and
// /etc/ssl/certs, leaving the links in place; a directory entry for them
// used to fail the whole copy ("cannot overwrite non-directory").
func TestRunImageWithSymlinkedEtcDirs(t *testing.T) {
	e := newEnv(t)
	importSymlinkImage(t)
	e.must("init")
	id := strings.TrimSpace(e.must("run", "-d", "--project", "symlinks", "--agent", "a", symlinkImage, "sleep", "3600").stdout)
	ctx := context.Background()
	read := func(path string) string {
		t.Helper()
		data, err := testenv.ContainerFile(ctx, suite.docker, id, path)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	sshCfg := read("/usr/etc/ssh/ssh_config")
	if !strings.HasPrefix(sshCfg, "# Written by clawker run") || !strings.Contains(sshCfg, "proxy-connect '%h' %p") ||
		!strings.HasSuffix(sshCfg, symlinkSSHConfig) {
		t.Errorf("ssh_config through the link:\n%s", sshCfg)
	}
	if d := read("/usr/etc/ssh/ssh_config.d/99-clawker-egress.conf"); !strings.Contains(d, "ProxyCommand") {
		t.Errorf("drop-in through the link:\n%s", d)
	}
	if ca := read("/etc/pki/tls/certs/ca-certificates.crt"); !strings.HasPrefix(ca, symlinkCABundle) || !strings.Contains(ca, "BEGIN CERTIFICATE") {
		t.Errorf("CA bundle through the link:\n%s", ca)
	}
	for _, link := range []string{"/etc/ssh", "/etc/ssl/certs"} {
		st, err := suite.docker.ContainerStatPath(ctx, id, mobyclient.ContainerStatPathOptions{Path: link})
		if err != nil {
			t.Fatal(err)
		}
		if st.Stat.Mode&os.ModeSymlink == 0 {
			t.Errorf("%s is no longer a symlink: %v", link, st.Stat.Mode)
		}
	}
}
