package kube

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// The images the suite's pods run, imported into the cluster's containerd.
const (
	agentImage    = "clawker-kube-e2e/busybox:e2e"
	clawkerdImage = "clawker-kube-e2e/clawkerd:e2e"
	testLabel     = "kube"
)

// cluster is the running cluster and the suite's built pieces.
type cluster struct {
	kube    kubernetes.Interface
	gateway string // the host's address on the pod network: where pods reach the CP
	binDir  string
}

// setup connects to the cluster scripts/kube-up.sh started (KUBECONFIG
// and CLAWKER_KUBE_GATEWAY), builds the binaries and loads the images.
func setup(t *testing.T) *cluster {
	t.Helper()
	kc, gw := os.Getenv("KUBECONFIG"), os.Getenv("CLAWKER_KUBE_GATEWAY")
	if kc == "" || gw == "" {
		testenv.Unavailable(t, "no cluster: run scripts/kube-up.sh and export KUBECONFIG and CLAWKER_KUBE_GATEWAY")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		testenv.Unavailable(t, "cluster unreachable: %v", err)
	}
	c := &cluster{kube: kube, gateway: gw, binDir: t.TempDir()}
	if err := testenv.BuildBinaries(c.binDir); err != nil {
		t.Fatalf("build: %v", err)
	}
	if err := c.loadImages(ctx); err != nil {
		t.Fatalf("images: %v", err)
	}
	return c
}

// loadImages builds the two images in Docker (nothing is pulled), moves
// them into the cluster and removes them from Docker again.
func (c *cluster) loadImages(ctx context.Context) error {
	docker, err := mobyclient.New(mobyclient.FromEnv)
	if err != nil {
		return err
	}
	defer docker.Close()
	label := consts.LabelTest + "=" + testLabel
	if err := testenv.ImportBusybox(ctx, docker, agentImage, label); err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	if err := importClawkerd(ctx, docker, filepath.Join(c.binDir, "clawkerd"), label); err != nil {
		return fmt.Errorf("clawkerd image: %w", err)
	}
	defer func() {
		for _, ref := range []string{agentImage, clawkerdImage} {
			_, _ = docker.ImageRemove(context.WithoutCancel(ctx), ref, mobyclient.ImageRemoveOptions{Force: true})
		}
	}()
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.ModuleRoot(), "scripts", "kube-load-image.sh"), agentImage, clawkerdImage)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kube-load-image: %v: %s", err, out)
	}
	return nil
}

// importClawkerd makes the clawker image: the static clawkerd alone.
func importClawkerd(ctx context.Context, docker *mobyclient.Client, bin, label string) error {
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "clawkerd", Mode: 0o755, Size: int64(len(data))}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := docker.ImageImport(ctx, mobyclient.ImageImportSource{Source: &buf, SourceName: "-"}, clawkerdImage,
		mobyclient.ImageImportOptions{Changes: []string{"LABEL " + label}})
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res)
	return res.Close()
}

// namespace creates a fresh labelled namespace, deleted at the end.
func (c *cluster) namespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("clawker-e2e-%d", time.Now().UnixNano()%1e9)
	_, err := c.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{consts.LabelTest: testLabel}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		zero := int64(0)
		_ = c.kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	return ns
}

// freePorts returns n distinct ports free on every interface right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func itoa(n int) string { return strconv.Itoa(n) }
