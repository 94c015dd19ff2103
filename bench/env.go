package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

const (
	benchLabelValue = "bench"
	benchLabel      = consts.LabelTest + "=" + benchLabelValue
	agentImage      = "clawker-bench-busybox:latest"
	busyboxSrc      = "/bin/busybox"
)

// env is the bench's Docker client, built binaries and isolated CLI home.
type env struct {
	docker *mobyclient.Client
	binDir string
	home   string
	work   string // cwd for CLI calls: no stray clawker.yaml
}

func newEnv(ctx context.Context) (*env, error) {
	c, err := mobyclient.New(mobyclient.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = c.Ping(pctx, mobyclient.PingOptions{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("no Docker engine: %w", err)
	}
	if _, err := os.Stat(busyboxSrc); err != nil {
		return nil, fmt.Errorf("%s missing: apt-get install busybox-static", busyboxSrc)
	}
	e := &env{docker: c}
	for _, p := range []*string{&e.binDir, &e.home, &e.work} {
		if *p, err = os.MkdirTemp("", "clawker-bench-"); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *env) close() {
	e.sweep(context.Background())
	_, _ = e.docker.ImageRemove(context.Background(), agentImage, mobyclient.ImageRemoveOptions{Force: true})
	for _, d := range []string{e.binDir, e.home, e.work} {
		_ = os.RemoveAll(d)
	}
	_ = e.docker.Close()
}

// build compiles the three binaries statically, as a user's install has them.
func (e *env) build() error {
	cmd := exec.Command("go", "build", "-o", e.binDir+string(os.PathSeparator), "./cmd/clawker", "./cmd/clawker-cp", "./cmd/clawkerd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	return nil
}

// importBusybox makes the agent image (static busybox + applet symlinks)
// with the Docker API: nothing is pulled.
func (e *env) importBusybox(ctx context.Context) error {
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
	hdr := func(h *tar.Header, body []byte) error {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	for _, d := range []string{"bin/", "tmp/", "root/", "etc/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode}, nil); err != nil {
			return err
		}
	}
	if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))}, bin); err != nil {
		return err
	}
	for _, name := range strings.Fields(string(list)) {
		if name == "busybox" {
			continue
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + name, Linkname: "busybox", Mode: 0o777}, nil); err != nil {
			return err
		}
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
	if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd))}, passwd); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := e.docker.ImageImport(ctx, mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, agentImage,
		mobyclient.ImageImportOptions{Changes: []string{`CMD ["sh"]`, "ENV PATH=/bin", "LABEL " + benchLabel}})
	if err != nil {
		return fmt.Errorf("image import: %w", err)
	}
	_, _ = io.Copy(io.Discard, res)
	return res.Close()
}

// sweep removes every object labelled for the bench plus the fixed-name CP
// container (the bench holds the docker lock while it runs).
func (e *env) sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c := e.docker
	f := make(mobyclient.Filters).Add("label", benchLabel)
	if res, err := c.ContainerList(ctx, mobyclient.ContainerListOptions{All: true, Filters: f}); err == nil {
		parallel(len(res.Items), 8, func(i int) error {
			_, _ = c.ContainerRemove(ctx, res.Items[i].ID, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			return nil
		})
	}
	if _, err := c.ContainerRemove(ctx, consts.ControlPlaneContainer, mobyclient.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		fmt.Fprintln(os.Stderr, "bench sweep:", err)
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
			if len(img.RepoTags) > 0 && img.RepoTags[0] == agentImage {
				continue
			}
			_, _ = c.ImageRemove(ctx, img.ID, mobyclient.ImageRemoveOptions{Force: true, PruneChildren: true})
		}
	}
}

// result is one CLI invocation.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// clawkerCmd prepares a CLI subprocess with the bench's home and labels.
func (e *env) clawkerCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.binDir+"/clawker", args...)
	cmd.Env = append(os.Environ(), consts.EnvHome+"="+e.home, "CLAWKER_LABELS="+benchLabel)
	cmd.Dir = e.work
	return cmd
}

// run runs a command to completion, timing it from fork to exit.
func run(cmd *exec.Cmd) (result, error) {
	var out, errb bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	cmd.Stderr = &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
		return r, nil
	}
	return r, err
}

// must runs the CLI and fails on a non-zero exit.
func (e *env) must(ctx context.Context, args ...string) (result, error) {
	r, err := run(e.clawkerCmd(ctx, args...))
	if err == nil && r.code != 0 {
		err = fmt.Errorf("clawker %s: %s", strings.Join(args, " "), r)
	}
	return r, err
}

// parallel runs f(0..n-1) with at most width in flight; first error wins.
func parallel(n, width int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, width)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(ctx context.Context, timeout, every time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not true after %s: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}
