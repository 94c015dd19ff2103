package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/binimage"
	"github.com/clawker/clawker/internal/consts"
)

// BusyboxSrc is Debian's busybox-static binary, the only busybox that runs
// in an otherwise empty image.
const BusyboxSrc = "/bin/busybox"

// ErrUnavailable wraps the reason the engine cannot be used; callers skip
// on it unless CLAWKER_E2E=1 makes it a failure.
var ErrUnavailable = errors.New("docker engine unavailable")

// Suite is one prepared engine: built binaries, the imported agent image,
// and the label every object it creates carries.
type Suite struct {
	Docker *mobyclient.Client
	BinDir string
	// Label is "dev.clawker.test=<name>".
	Label string
	// Image is the busybox agent image reference.
	Image string

	unlock func() // releases the fixed-names lock
}

// Required reports whether CLAWKER_E2E=1 turns an unavailable engine into
// a failure.
func Required() bool { return os.Getenv(consts.EnvE2E) == "1" }

// LockHolders names every suite that runs under the fixed-names lock.
var LockHolders = []string{"e2e", "soak", "bench"}

// Setup connects to the engine, sweeps leftovers of earlier runs carrying
// the label, builds the binaries and imports the agent image. An error
// wrapping ErrUnavailable means there is no engine (or no busybox-static).
func Setup(ctx context.Context, name, image string) (*Suite, error) {
	c, err := mobyclient.New(mobyclient.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("%w: docker client: %v", ErrUnavailable, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = c.Ping(pctx, mobyclient.PingOptions{})
	cancel()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if _, err := os.Stat(BusyboxSrc); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %s missing: apt-get install busybox-static (scripts/install-deps.sh does)", ErrUnavailable, BusyboxSrc)
	}
	// Every suite uses the fixed names clawker-net and clawker-controlplane,
	// and go test runs packages in parallel: hold the machine-wide lock
	// until Close.
	unlock, err := LockFixedNames()
	if err != nil {
		c.Close()
		return nil, err
	}
	s := &Suite{Docker: c, Label: consts.LabelTest + "=" + name, Image: image, unlock: unlock}
	// A killed run of any suite holding this lock leaves its objects (an
	// unmanaged clawker-net among them, which cp up refuses): with the lock
	// held, nobody else is using them.
	for _, holder := range LockHolders {
		if holder != name {
			(&Suite{Docker: c, Label: consts.LabelTest + "=" + holder}).Sweep(ctx, false)
		}
	}
	s.Sweep(ctx, false)
	if s.BinDir, err = os.MkdirTemp("", "clawker-"+name+"-bin-"); err != nil {
		s.Close(ctx)
		return nil, err
	}
	if err := BuildBinaries(s.BinDir); err != nil {
		s.Close(ctx)
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := ImportBusybox(ctx, c, image, s.Label); err != nil {
		s.Close(ctx)
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	return s, nil
}

// Close sweeps everything labelled and removes the binaries.
func (s *Suite) Close(ctx context.Context) {
	s.Sweep(ctx, false)
	if s.BinDir != "" {
		os.RemoveAll(s.BinDir)
	}
	s.Docker.Close()
	if s.unlock != nil {
		s.unlock()
	}
}

// Bin returns the path of one built binary.
func (s *Suite) Bin(name string) string { return filepath.Join(s.BinDir, name) }

// ModuleRoot is the repository root (where go.mod is).
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildBinaries builds clawker, clawker-cp and clawkerd (and the packages
// in more) statically into dir.
func BuildBinaries(dir string, more ...string) error {
	args := append([]string{"build", "-o", dir + string(os.PathSeparator), "./cmd/clawker", "./cmd/clawker-cp", "./cmd/clawkerd"}, more...)
	cmd := exec.Command("go", args...)
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// ImportBusybox makes an agent image: Debian's static busybox plus one
// symlink per applet, a minimal /etc/passwd and the extra files (their
// directories made), imported with the Docker API (nothing is pulled)
// and labelled.
func ImportBusybox(ctx context.Context, c *mobyclient.Client, ref, label string, extra ...binimage.File) error {
	list, err := exec.Command(BusyboxSrc, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	bin, err := os.ReadFile(BusyboxSrc)
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
	if err := writeFile(tw, "bin/busybox", 0o755, bin); err != nil {
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
	dirs := map[string]bool{"bin": true, "tmp": true, "root": true, "etc": true}
	for _, f := range extra {
		var parents []string
		for d := path.Dir(f.Name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		if err := writeFile(tw, f.Name, f.Mode, f.Data); err != nil {
			return err
		}
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
	if err := writeFile(tw, "etc/passwd", 0o644, []byte(passwd)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := c.ImageImport(ctx, mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, ref,
		mobyclient.ImageImportOptions{Changes: []string{`CMD ["sh"]`, "ENV PATH=/bin", "LABEL " + label}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res)
	return res.Close()
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// Sweep removes every object carrying the suite's label, plus the
// fixed-name CP containers (the CP and its network holder) the suite owns
// while it runs. keepImage keeps the
// agent image (between tests).
func (s *Suite) Sweep(ctx context.Context, keepImage bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c := s.Docker
	f := make(mobyclient.Filters).Add("label", s.Label)
	if res, err := c.ContainerList(ctx, mobyclient.ContainerListOptions{All: true, Filters: f}); err == nil {
		for _, ctr := range res.Items {
			_, _ = c.ContainerRemove(ctx, ctr.ID, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	}
	for _, name := range []string{consts.ControlPlaneContainer, consts.ControlPlaneNetContainer} {
		if _, err := c.ContainerRemove(ctx, name, mobyclient.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			fmt.Fprintln(os.Stderr, "sweep:", err)
		}
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
			if keepImage && slices.Contains(img.RepoTags, s.Image) {
				continue
			}
			_, _ = c.ImageRemove(ctx, img.ID, mobyclient.ImageRemoveOptions{Force: true, PruneChildren: true})
		}
	}
}
