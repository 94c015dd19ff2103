package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/testenv"
)

// userImage is busybox with an unprivileged USER, a WORKDIR and a
// supplementary group, like a typical dev image.
const userImage = "clawker-e2e-busybox-user:latest"

// importUserImage builds userImage from the same static busybox as the
// suite image: agent (1000:1000, home /home/agent, member of devs 2000),
// USER agent, WORKDIR /app. Labelled, so the suite's sweep removes it.
func importUserImage(t *testing.T) {
	t.Helper()
	list, err := exec.Command(testenv.BusyboxSrc, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(testenv.BusyboxSrc)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(h *tar.Header, data []byte) {
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "root/", "home/", "app/"} {
		hdr(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}, nil)
	}
	hdr(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil)
	hdr(&tar.Header{Typeflag: tar.TypeDir, Name: "home/agent/", Mode: 0o755, Uid: 1000, Gid: 1000}, nil)
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, bin)
	for _, name := range strings.Fields(string(list)) {
		if name != "busybox" {
			hdr(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + name, Linkname: "busybox", Mode: 0o777}, nil)
		}
	}
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, []byte(
		"root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, []byte(
		"root:x:0:\nagent:x:1000:\ndevs:x:2000:agent\nnogroup:x:65534:\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := suite.docker.ImageImport(ctx, mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, userImage,
		mobyclient.ImageImportOptions{Changes: []string{`CMD ["sh"]`, "ENV PATH=/bin", "USER agent", "WORKDIR /app",
			"LABEL " + suite.env.Label}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res)
	_ = res.Close()
	t.Cleanup(func() {
		_, _ = suite.docker.ImageRemove(context.Background(), userImage, mobyclient.ImageRemoveOptions{Force: true})
	})
}

// identity prints uid, gid, groups, HOME and cwd in one line.
const identity = `echo "$(id -u) $(id -g) [$(id -G)] $HOME $(pwd)"`

// TestExecLikeDockerExec: clawker exec runs by default as the image's
// USER with its HOME and supplementary groups in its WORKDIR, as docker
// exec does; -u (name or uid:gid, resolved in the container) and -w
// override it.
func TestExecLikeDockerExec(t *testing.T) {
	e := newEnv(t)
	importUserImage(t)
	e.must("init")
	e.must("cp", "up", "--wait", "90s")
	id := strings.TrimSpace(e.must("run", "-d", "--agent", "dev", userImage, "sleep", "3600").stdout)
	eventually(t, 90*time.Second, "agent initialized", func() error {
		if r, ok := findAgent(e.agents(), id); !ok || r.Init != "completed" {
			return fmt.Errorf("agent row %+v", r)
		}
		return nil
	})
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"default", nil, "1000 1000 [1000 2000] /home/agent /app"},
		{"-u root -w /tmp", []string{"-u", "root", "-w", "/tmp"}, "0 0 [0] /root /tmp"},
		{"-u uid:gid", []string{"-u", "1000:2000"}, "1000 2000 [2000] /home/agent /app"},
		{"-u unknown uid", []string{"-u", "4321"}, "4321 0 [0] / /app"},
	}
	for _, tc := range cases {
		args := append(append([]string{"exec"}, tc.args...), "dev", "--", "sh", "-c", identity)
		r := e.must(args...)
		if got := strings.TrimSpace(r.stdout); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if r := e.clawker("exec", "-u", "nosuch", "dev", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("exec -u nosuch: want a failure naming the user, got %s", r)
	}
}
