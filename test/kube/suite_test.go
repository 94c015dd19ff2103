package kube

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clawker/clawker/internal/binimage"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// The images the suite's pods run, imported into the cluster's containerd.
const (
	agentImage    = "clawker-kube-e2e/busybox:e2e"
	clawkerdImage = "clawker-kube-e2e/clawkerd:e2e"
	cpImage       = "clawker-kube-e2e/clawker-cp:e2e"
	attackerImage = "clawker-kube-e2e/attacker:e2e" // test/e2e/attacker alone
	testLabel     = "kube"
)

// cluster is the running cluster and the suite's built pieces.
type cluster struct {
	kube    kubernetes.Interface
	gateway string // the host's address on the pod network: where pods reach the CP
	binDir  string
}

// suite is the one prepared cluster every test shares.
var suite struct {
	once        sync.Once
	c           *cluster
	unavailable string
	err         error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if suite.c != nil {
		os.RemoveAll(suite.c.binDir)
	}
	os.Exit(code)
}

// setup connects to the cluster scripts/kube-up.sh started (KUBECONFIG
// and CLAWKER_KUBE_GATEWAY), builds the binaries and loads the images,
// once for the whole package.
func setup(t *testing.T) *cluster {
	t.Helper()
	suite.once.Do(func() { suite.c, suite.unavailable, suite.err = prepare() })
	if suite.unavailable != "" {
		testenv.Unavailable(t, "%s", suite.unavailable)
	}
	if suite.err != nil {
		t.Fatal(suite.err)
	}
	return suite.c
}

func prepare() (*cluster, string, error) {
	kc, gw := os.Getenv("KUBECONFIG"), os.Getenv("CLAWKER_KUBE_GATEWAY")
	if kc == "" || gw == "" {
		return nil, "no cluster: run scripts/kube-up.sh and export KUBECONFIG and CLAWKER_KUBE_GATEWAY", nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		return nil, fmt.Sprintf("cluster unreachable: %v", err), nil
	}
	dir, err := os.MkdirTemp("", "clawker-kube-bin-")
	if err != nil {
		return nil, "", err
	}
	c := &cluster{kube: kube, gateway: gw, binDir: dir}
	if err := testenv.BuildBinaries(c.binDir, "./cmd/clawker-kube", "./test/e2e/attacker", "./test/e2e/fakenet"); err != nil {
		return c, "", fmt.Errorf("build: %w", err)
	}
	if err := c.loadImages(ctx); err != nil {
		return c, "", fmt.Errorf("images: %w", err)
	}
	return c, "", nil
}

// loadImages builds the images in Docker (nothing is pulled), moves them
// into the cluster and removes them from Docker again.
func (c *cluster) loadImages(ctx context.Context) error {
	docker, err := mobyclient.New(mobyclient.FromEnv)
	if err != nil {
		return err
	}
	defer docker.Close()
	refs := []string{agentImage, clawkerdImage, cpImage, attackerImage}
	defer func() {
		for _, ref := range refs {
			_, _ = docker.ImageRemove(context.WithoutCancel(ctx), ref, mobyclient.ImageRemoveOptions{Force: true})
		}
	}()
	label := consts.LabelTest + "=" + testLabel
	// The agent image also holds the egress test's client and a system
	// bundle, for clawkerd to append the gateway's CA to.
	fakenet, err := os.ReadFile(filepath.Join(c.binDir, "fakenet"))
	if err != nil {
		return err
	}
	if err := testenv.ImportBusybox(ctx, docker, agentImage, label,
		binimage.File{Name: "fakenet/fakenet", Mode: 0o755, Data: fakenet},
		binimage.File{Name: "etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: []byte("# the image's roots\n")}); err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	// The CP's and clawkerd's images as a user builds them.
	images := exec.CommandContext(ctx, filepath.Join(c.binDir, "clawker"), "--runtime", "kubernetes", "cp", "images",
		"--repo", "clawker-kube-e2e", "--tag", "e2e")
	images.Env = append(os.Environ(), "CLAWKER_LABELS="+label)
	if out, err := images.CombinedOutput(); err != nil {
		return fmt.Errorf("cp images: %v: %s", err, out)
	} else if want := cpImage + "\n" + clawkerdImage + "\n"; !strings.HasPrefix(string(out), want) {
		return fmt.Errorf("cp images printed %q, want %q first", out, want)
	}
	if err := testenv.ImportBinary(ctx, docker, attackerImage, filepath.Join(c.binDir, "attacker"), "attacker", label); err != nil {
		return fmt.Errorf("attacker image: %w", err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.ModuleRoot(), "scripts", "kube-load-image.sh"), refs...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kube-load-image: %v: %s", err, out)
	}
	return nil
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
