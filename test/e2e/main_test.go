package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

const (
	testLabel = consts.LabelTest + "=e2e"
	// agentImage is the busybox image the suite imports.
	agentImage = "clawker-e2e-busybox:latest"
	busyboxSrc = "/bin/busybox"
)

// suite is the state TestMain prepares for every test.
var suite struct {
	skip   string // non-empty: why every test skips
	binDir string
	docker *mobyclient.Client
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	required := os.Getenv(consts.EnvE2E) == "1"
	fail := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		if required {
			fmt.Fprintf(os.Stderr, "e2e: %s (CLAWKER_E2E=1 makes this a failure)\n", msg)
			return 1
		}
		suite.skip = msg
		return m.Run()
	}
	c, err := mobyclient.New(mobyclient.FromEnv)
	if err != nil {
		return fail("docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = c.Ping(ctx, mobyclient.PingOptions{})
	cancel()
	if err != nil {
		return fail("no Docker engine: %v", err)
	}
	if _, err := os.Stat(busyboxSrc); err != nil {
		return fail("%s missing: apt-get install busybox-static (scripts/install-deps.sh does)", busyboxSrc)
	}
	suite.docker = c
	defer c.Close()

	sweep(context.Background(), c, false)
	defer sweep(context.Background(), c, false)

	dir, err := os.MkdirTemp("", "clawker-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		return 1
	}
	suite.binDir = dir
	if err := importBusybox(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: busybox image:", err)
		return 1
	}
	return m.Run()
}

func requireSuite(t *testing.T) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
}

// buildBinaries builds clawker, clawker-cp and clawkerd statically into dir.
func buildBinaries(dir string) error {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/clawker", "./cmd/clawker-cp", "./cmd/clawkerd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// importBusybox makes the agent image: Debian's static busybox plus one
// symlink per applet, imported with the Docker API (nothing is pulled).
func importBusybox(ctx context.Context, c *mobyclient.Client) error {
	list, err := exec.Command(busyboxSrc, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	bin, err := os.ReadFile(busyboxSrc)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "tmp/", "root/", "etc/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	for _, name := range strings.Fields(string(list)) {
		if name == "busybox" {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + name, Linkname: "busybox", Mode: 0o777}); err != nil {
			return err
		}
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd))}); err != nil {
		return err
	}
	if _, err := tw.Write([]byte(passwd)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := c.ImageImport(ctx, mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, agentImage,
		mobyclient.ImageImportOptions{Changes: []string{`CMD ["sh"]`, "ENV PATH=/bin", "LABEL " + testLabel}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res)
	return res.Close()
}

// sweep removes every object carrying the e2e label, plus the fixed-name
// CP container the suite owns while it runs. Between tests (keepAgentImage)
// the suite's busybox image stays.
func sweep(ctx context.Context, c *mobyclient.Client, keepAgentImage bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	f := make(mobyclient.Filters).Add("label", testLabel)
	if res, err := c.ContainerList(ctx, mobyclient.ContainerListOptions{All: true, Filters: f}); err == nil {
		for _, ctr := range res.Items {
			_, _ = c.ContainerRemove(ctx, ctr.ID, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	}
	if _, err := c.ContainerRemove(ctx, consts.ControlPlaneContainer, mobyclient.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		fmt.Fprintln(os.Stderr, "e2e sweep:", err)
	}
	if res, err := c.NetworkList(ctx, mobyclient.NetworkListOptions{Filters: f}); err == nil {
		for _, n := range res.Items {
			_, _ = c.NetworkRemove(ctx, n.ID, mobyclient.NetworkRemoveOptions{})
		}
	}
	if res, err := c.VolumeList(ctx, mobyclient.VolumeListOptions{Filters: f}); err == nil {
		for _, v := range res.Items {
			_, _ = c.VolumeRemove(ctx, v.Name, mobyclient.VolumeRemoveOptions{Force: true})
		}
	}
	if res, err := c.ImageList(ctx, mobyclient.ImageListOptions{All: true, Filters: f}); err == nil {
		for _, img := range res.Items {
			if keepAgentImage && slices.Contains(img.RepoTags, agentImage) {
				continue
			}
			_, _ = c.ImageRemove(ctx, img.ID, mobyclient.ImageRemoveOptions{Force: true, PruneChildren: true})
		}
	}
}
