package clawkerd

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	dockerclient "github.com/moby/moby/client"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// e2eLabel marks every Docker object these tests create.
const e2eLabel = "clawkerd-pid1-e2e"

var e2eImageOnce struct {
	sync.Once
	ref string
	err error
}

// dockerClient returns a client, skipping without Docker unless
// CLAWKER_E2E=1 makes that a failure.
func dockerClient(t testing.TB) *dockerclient.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: -short")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testenv.Unavailable(t, "e2e: /bin/busybox (Debian busybox-static) missing: %v", err)
	}
	cli, err := dockerclient.New(dockerclient.FromEnv)
	if err != nil {
		testenv.Unavailable(t, "e2e: docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, dockerclient.PingOptions{}); err != nil {
		testenv.Unavailable(t, "e2e: docker engine unavailable: %v", err)
	}
	return cli
}

// sweep removes leftovers of earlier runs (by label).
func sweep(t testing.TB, cli *dockerclient.Client) {
	ctx := context.Background()
	f := make(dockerclient.Filters).Add("label", consts.LabelTest+"="+e2eLabel)
	cs, err := cli.ContainerList(ctx, dockerclient.ContainerListOptions{All: true, Filters: f})
	if err == nil {
		for _, c := range cs.Items {
			_, _ = cli.ContainerRemove(ctx, c.ID, dockerclient.ContainerRemoveOptions{Force: true})
		}
	}
}

// e2eImage builds clawkerd (static) and imports an image holding busybox,
// its applet links and clawkerd. Built once per test process.
func e2eImage(t testing.TB, cli *dockerclient.Client) string {
	t.Helper()
	e2eImageOnce.Do(func() {
		e2eImageOnce.ref, e2eImageOnce.err = buildE2EImage(cli)
	})
	if e2eImageOnce.err != nil {
		t.Fatal(e2eImageOnce.err)
	}
	return e2eImageOnce.ref
}

func buildE2EImage(cli *dockerclient.Client) (string, error) {
	dir, err := os.MkdirTemp("", "clawkerd-e2e-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "clawkerd")
	build := exec.Command("go", "build", "-o", bin, "github.com/clawker/clawker/cmd/clawkerd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build clawkerd: %v: %s", err, out)
	}
	applets, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	addFile := func(name, src string, mode int64) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin/", 0o755}, {"etc/", 0o755}, {"tmp/", 0o1777}, {"run/", 0o755}, {"run/clawker/", 0o755}, {"run/clawker/bin/", 0o755}, {"var/", 0o755}, {"root/", 0o700}} {
		if err := tw.WriteHeader(&tar.Header{Name: d.name, Mode: d.mode, Typeflag: tar.TypeDir}); err != nil {
			return "", err
		}
	}
	if err := addFile("bin/busybox", "/bin/busybox", 0o755); err != nil {
		return "", err
	}
	if err := addFile(strings.TrimPrefix(consts.ClawkerdPath, "/"), bin, 0o755); err != nil {
		return "", err
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Linkname: "busybox", Typeflag: tar.TypeSymlink, Mode: 0o777}); err != nil {
			return "", err
		}
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
	group := "root:x:0:\nnogroup:x:65534:\n"
	for name, s := range map[string]string{"etc/passwd": passwd, "etc/group": group} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(s)), Typeflag: tar.TypeReg}); err != nil {
			return "", err
		}
		if _, err := tw.Write([]byte(s)); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	ref := fmt.Sprintf("clawkerd-e2e:%d", time.Now().UnixNano())
	rc, err := cli.ImageImport(context.Background(), dockerclient.ImageImportSource{Source: &buf, SourceName: "-"}, ref,
		dockerclient.ImageImportOptions{Changes: []string{"LABEL " + consts.LabelTest + "=" + e2eLabel, "ENV PATH=/bin"}})
	if err != nil {
		return "", fmt.Errorf("image import: %w", err)
	}
	_, _ = io.Copy(io.Discard, rc)
	_ = rc.Close()
	return ref, nil
}

// removeE2EImage is called by TestMain-less cleanup: the last test to use
// the image removes it (see registerImageCleanup).
func registerImageCleanup(t testing.TB, cli *dockerclient.Client, ref string) {
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.Background(), ref, dockerclient.ImageRemoveOptions{Force: true})
		e2eImageOnce.Once = sync.Once{}
	})
}

// bootstrapTar holds /run/clawker/bootstrap as the CLI copies it in.
func bootstrapTar(pki *testPKI) (io.Reader, error) {
	keyPEM, err := auth.KeyPEM(pki.agentKey())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "run/clawker/bootstrap/", Mode: 0o700, Typeflag: tar.TypeDir}); err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{
		consts.BootstrapCert:   auth.CertPEM(pki.agent.Leaf),
		consts.BootstrapKey:    keyPEM,
		consts.BootstrapCA:     auth.CertPEM(pki.ca.Cert),
		consts.BootstrapAssert: []byte("unused"),
	} {
		if err := tw.WriteHeader(&tar.Header{Name: "run/clawker/bootstrap/" + name, Mode: 0o400, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	return &buf, tw.Close()
}

// startAgent creates (with the bootstrap copied in before start) and starts
// an agent container whose Session port is published on 127.0.0.1.
func startAgent(t testing.TB, cli *dockerclient.Client, image string, pki *testPKI, cmd []string, env ...string) string {
	t.Helper()
	ctx := context.Background()
	port := network.MustParsePort(fmt.Sprintf("%d/tcp", consts.PortSession))
	res, err := cli.ContainerCreate(ctx, dockerclient.ContainerCreateOptions{
		Config: &container.Config{
			Image:        image,
			Entrypoint:   []string{consts.ClawkerdPath, "--"},
			Cmd:          cmd,
			Env:          append([]string{consts.EnvAgent + "=e2e"}, env...),
			Labels:       map[string]string{consts.LabelTest: e2eLabel},
			ExposedPorts: network.PortSet{port: {}},
		},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1")}}},
		},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		_, _ = cli.ContainerRemove(context.Background(), res.ID, dockerclient.ContainerRemoveOptions{Force: true})
	})
	bt, err := bootstrapTar(pki)
	must(t, err)
	if _, err := cli.CopyToContainer(ctx, res.ID, dockerclient.CopyToContainerOptions{DestinationPath: "/", Content: bt}); err != nil {
		t.Fatalf("copy bootstrap: %v", err)
	}
	if _, err := cli.ContainerStart(ctx, res.ID, dockerclient.ContainerStartOptions{}); err != nil {
		t.Fatalf("start: %v", err)
	}
	return res.ID
}

// agentSession dials the container's published Session port (retrying
// until clawkerd listens) and completes Hello.
func agentSession(t testing.TB, cli *dockerclient.Client, id string, pki *testPKI) (*client, *clawkerdv1.HelloAck) {
	t.Helper()
	var addr string
	eventually(t, 30*time.Second, "published port", func() bool {
		insp, err := cli.ContainerInspect(context.Background(), id, dockerclient.ContainerInspectOptions{})
		if err != nil || insp.Container.NetworkSettings == nil {
			return false
		}
		for p, bs := range insp.Container.NetworkSettings.Ports {
			if p.Num() == consts.PortSession && len(bs) > 0 && bs[0].HostPort != "" {
				addr = "127.0.0.1:" + bs[0].HostPort
				return true
			}
		}
		return false
	})
	ts := &testServer{addr: addr, pki: pki}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn := ts.dial(t, pki.cp)
		c, ack, err := tryHello(t, conn)
		if err == nil {
			return c, ack
		}
		_ = conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no Session to %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryHello opens a Session and completes Hello, returning an error
// instead of failing so callers can retry while clawkerd starts.
func tryHello(t testing.TB, conn *grpc.ClientConn) (*client, *clawkerdv1.HelloAck, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := clawkerdv1.NewClawkerdServiceClient(conn).Session(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	c := &client{t: t, stream: stream, cancel: cancel, chans: map[string]chan *clawkerdv1.Response{}, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			c.ch(r.GetCommandId()) <- r
		}
	}()
	if err := stream.Send(&clawkerdv1.Command{CommandId: "hello", Payload: &clawkerdv1.Command_Hello{Hello: &clawkerdv1.Hello{}}}); err != nil {
		c.close()
		return nil, nil, err
	}
	select {
	case r := <-c.ch("hello"):
		t.Cleanup(c.close)
		return c, r.GetHelloAck(), nil
	case <-c.done:
		c.close()
		return nil, nil, fmt.Errorf("session closed before HelloAck")
	case <-time.After(5 * time.Second):
		c.close()
		return nil, nil, fmt.Errorf("no HelloAck")
	}
}

func inspectExit(t testing.TB, cli *dockerclient.Client, id string) (running bool, code int) {
	t.Helper()
	insp, err := cli.ContainerInspect(context.Background(), id, dockerclient.ContainerInspectOptions{})
	must(t, err)
	return insp.Container.State.Running, insp.Container.State.ExitCode
}

// TestPID1InContainer proves the PID 1 duties inside a real container:
// orphans are reaped, docker stop's SIGTERM reaches the user CMD and its
// 143 becomes the container's exit code, and the init marker survives
// stop/start while cmd_running is reported false again.
