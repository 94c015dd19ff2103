package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// gitImage is busybox plus the host's (Debian's) git, git-remote-https and
// ssh client with their shared libraries: an agent image that can push
// over ssh and https, built from a tar (no registry).
const gitImage = "clawker-e2e-git:latest"

// importGitImage builds gitImage from the suite's busybox image and the
// host binaries named below; it skips the test when they are missing.
func importGitImage(t *testing.T) {
	t.Helper()
	bins := []string{"/usr/bin/git", "/usr/bin/ssh", "/usr/lib/git-core/git-remote-http"}
	for _, b := range bins {
		if _, err := os.Stat(b); err != nil {
			testenv.Unavailable(t, "host lacks %s (scripts/install-deps.sh installs git and openssh-client)", b)
		}
	}
	files := map[string]string{} // path in image -> host source
	for _, b := range bins {
		files[b] = b
		out, err := exec.Command("ldd", b).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", b, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") {
				files[f] = f
			}
		}
	}
	ctx := context.Background()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	writeBaseImage(t, tw)
	dirs := map[string]bool{}
	for dst, src := range files {
		for d := dst[:strings.LastIndex(dst, "/")]; d != ""; d = d[:strings.LastIndex(d, "/")] {
			dirs[d] = true
		}
		data, err := os.ReadFile(src) // follows symlinks: the real library
		if err != nil {
			t.Fatal(err)
		}
		files[dst] = string(data)
	}
	// An ssh_config as older openssh packages ship it, without the
	// Include of ssh_config.d: clawker run must put the drop-in's block in it.
	files["/etc/ssh/ssh_config"] = "Host *\n    SendEnv LANG LC_*\n    HashKnownHosts yes\n"
	dirs["/etc/ssh"] = true
	for d := range dirs {
		if d == "/bin" || d == "/etc" {
			continue // from busybox
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755})
	}
	for dst, data := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dst[1:], Mode: 0o755, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, data); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{{"usr/lib/git-core/git", "/usr/bin/git"}, {"usr/lib/git-core/git-remote-https", "git-remote-http"}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: l[0], Linkname: l[1], Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := suite.docker.ImageImport(ctx, mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, gitImage,
		mobyclient.ImageImportOptions{Changes: []string{`CMD ["sh"]`, "ENV PATH=/usr/bin:/bin", "LABEL " + testLabel}})
	if err != nil {
		t.Fatalf("import %s: %v", gitImage, err)
	}
	_, _ = io.Copy(io.Discard, res)
	_ = res.Close()
}

// writeBaseImage writes the suite's busybox image's files into tw (an
// exported container of it), for images built on it.
func writeBaseImage(t *testing.T, tw *tar.Writer) {
	t.Helper()
	ctx := context.Background()
	base, err := suite.docker.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Config: &container.Config{Image: agentImage, Labels: map[string]string{consts.LabelTest: "e2e"}}})
	if err != nil {
		t.Fatalf("create base: %v", err)
	}
	defer func() {
		_, _ = suite.docker.ContainerRemove(ctx, base.ID, mobyclient.ContainerRemoveOptions{Force: true})
	}()
	exp, err := suite.docker.ContainerExport(ctx, base.ID, mobyclient.ContainerExportOptions{})
	if err != nil {
		t.Fatalf("export base: %v", err)
	}
	defer exp.Close()
	tr := tar.NewReader(exp)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("read base: %v", err)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
}
