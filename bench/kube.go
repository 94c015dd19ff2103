package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	mobyclient "github.com/moby/moby/client"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/kubecp"
	"github.com/clawker/clawker/internal/testenv"
)

// Images the kubernetes figure loads into the cluster.
const (
	kubeAgentImage    = "clawker-bench/busybox:bench"
	kubeClawkerdImage = "clawker-bench/clawkerd:bench"
	kubeCPImage       = "clawker-bench/clawker-cp:bench"
)

// kubeResult is figure 8: agents as pods, under the CP deployed in the
// cluster (clawker --runtime kubernetes cp up), driven through the CLI.
type kubeResult struct {
	Pods      int `json:"pods"`
	InitSteps int `json:"init_steps"`
	// `clawker run -d` invoked → InitCompleted (the CP's event time), and
	// from clawkerd's "listening" (its own log time: the container has
	// started) → InitCompleted, the pod's analogue of figure 1.
	RunToInit       stat `json:"run_to_init_completed"`
	ListeningToInit stat `json:"clawkerd_listening_to_init_completed"`
	// Breakdown: run → SessionConnected (the pod's scheduling, sandbox,
	// init container and start), SessionConnected → AgentRegistered,
	// AgentRegistered → InitCompleted.
	RunToConnected        stat `json:"run_to_session_connected"`
	ConnectedToRegistered stat `json:"session_connected_to_agent_registered"`
	RegisteredToInit      stat `json:"agent_registered_to_init_completed"`
	// Anchor: the same number of steps, each a `kubectl exec POD -- sh -c
	// true`, one after another.
	AnchorKubectlSteps stat `json:"anchor_kubectl_exec_steps"`
	// Register at scale: ScalePods started at once (8 CLI runs in flight).
	ScalePods           int     `json:"scale_pods"`
	ConnectedToRegister stat    `json:"scale_session_connected_to_agent_registered"`
	AllRegisteredMs     float64 `json:"first_run_to_all_registered_ms"`
	Registers           float64 `json:"registers"`
	APICalls            float64 `json:"pod_api_calls"` // the CP's pod GETs + LISTs during the scale phase
}

// kubeEnv is the cluster side of the figure.
type kubeEnv struct {
	*env
	api     kubernetes.Interface
	ns      string
	kubectl string
	cleanup []func()
}

// runKube is `go run ./bench -kube`: figure 8 alone, on the cluster in
// $KUBECONFIG (scripts/kube-up.sh; source .cache/kube/run/env).
func runKube(ctx context.Context, o *options, rep *report) error {
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		return fmt.Errorf("-kube needs a cluster: run scripts/kube-up.sh and source .cache/kube/run/env")
	}
	fmt.Println("building binaries and loading the images into the cluster")
	k, err := newKubeEnv(ctx, kc)
	if err != nil {
		return err
	}
	defer k.close()
	res := &kubeResult{}
	rep.Kube = res
	fmt.Println("figure 8: pods, run → InitCompleted")
	w, err := k.watchEvents(ctx)
	if err != nil {
		return err
	}
	defer w.stop()
	if err := rep.track("kube ready", func() error { return k.measureReady(ctx, w, res, o.kubePods, o.anchorReps) }); err != nil {
		return err
	}
	fmt.Printf("figure 8: pods, Register with %d more pods\n", o.kubeScale)
	return rep.track("kube register", func() error { return k.measureScale(ctx, w, res, o.kubeScale) })
}

func newKubeEnv(ctx context.Context, kc string) (*kubeEnv, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, err
	}
	api, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	root := testenv.ModuleRoot()
	k := &kubeEnv{env: &env{}, api: api, ns: fmt.Sprintf("clawker-bench-%d", time.Now().Unix()%1e6),
		kubectl: filepath.Join(root, ".cache", "kube", "bin", "kubectl")}
	if d := os.Getenv("CLAWKER_KUBE_CACHE"); d != "" {
		k.kubectl = filepath.Join(d, "bin", "kubectl")
	}
	for _, p := range []*string{&k.home, &k.work, &k.binDir} {
		if *p, err = os.MkdirTemp("", "clawker-bench-kube-"); err != nil {
			k.close()
			return nil, err
		}
	}
	if err := testenv.BuildBinaries(k.binDir, "./cmd/clawker-kube"); err != nil {
		k.close()
		return nil, err
	}
	if err := k.loadImages(ctx, root); err != nil {
		k.close()
		return nil, err
	}
	k.global = []string{"--runtime", "kubernetes", "--kubeconfig", kc, "-n", k.ns}
	if err := k.deployCP(ctx); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

func (k *kubeEnv) close() {
	for i := len(k.cleanup) - 1; i >= 0; i-- {
		k.cleanup[i]()
	}
	for _, d := range []string{k.home, k.work, k.binDir} {
		if d != "" {
			_ = os.RemoveAll(d)
		}
	}
}

// loadImages builds the three images in Docker, moves them into the
// cluster and removes them from Docker.
func (k *kubeEnv) loadImages(ctx context.Context, root string) error {
	docker, err := mobyclient.New(mobyclient.FromEnv)
	if err != nil {
		return err
	}
	defer docker.Close()
	refs := []string{kubeAgentImage, kubeClawkerdImage, kubeCPImage}
	defer func() {
		for _, ref := range refs {
			_, _ = docker.ImageRemove(context.WithoutCancel(ctx), ref, mobyclient.ImageRemoveOptions{Force: true})
		}
	}()
	if err := testenv.ImportBusybox(ctx, docker, kubeAgentImage, benchLabel); err != nil {
		return err
	}
	images := exec.CommandContext(ctx, filepath.Join(k.binDir, "clawker"), "--runtime", "kubernetes", "cp", "images",
		"--repo", "clawker-bench", "--tag", "bench")
	images.Env = append(os.Environ(), "CLAWKER_LABELS="+benchLabel)
	if out, err := images.CombinedOutput(); err != nil {
		return fmt.Errorf("cp images: %v: %s", err, out)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(root, "scripts", "kube-load-image.sh"), refs...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kube-load-image: %v: %s", err, out)
	}
	return nil
}

// deployCP makes the namespace and a hostPath volume for the registry,
// then runs clawker init and cp up.
func (k *kubeEnv) deployCP(ctx context.Context) error {
	labels := map[string]string{consts.LabelTest: benchLabelValue}
	if _, err := k.api.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k.ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	k.cleanup = append(k.cleanup, func() {
		zero := int64(0)
		_ = k.api.CoreV1().Namespaces().Delete(context.Background(), k.ns, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	dir, err := os.MkdirTemp("", "clawker-bench-pv-")
	if err != nil {
		return err
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: k.ns + "-cp-data", Labels: labels},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
		},
	}
	if _, err := k.api.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		return err
	}
	k.cleanup = append(k.cleanup, func() {
		_ = k.api.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		_ = os.RemoveAll(dir)
	})
	if _, err := k.must(ctx, "init"); err != nil {
		return err
	}
	_, err = k.must(ctx, "cp", "up", "--image", kubeCPImage, "--clawkerd-image", kubeClawkerdImage, "--volume", pv.Name)
	return err
}

// measureReady starts n pods one at a time, alternating with the anchor
// (kubectl exec of the init steps in the first pod).
func (k *kubeEnv) measureReady(ctx context.Context, w *evWatch, res *kubeResult, n, anchorReps int) error {
	var r2i, l2i, r2c, c2r, reg2i, anchor sample
	startOne := func(i int) error {
		t0 := time.Now()
		id, err := k.startAgent(ctx, kubeAgentImage, fmt.Sprintf("k%03d", i))
		if err != nil {
			return err
		}
		if err := waitFor(ctx, 3*time.Minute, 10*time.Millisecond, "init_completed "+id[:12], func() error {
			if _, ok := w.at(id, "init_completed"); !ok {
				return fmt.Errorf("not yet")
			}
			return nil
		}); err != nil {
			return err
		}
		at, _ := w.at(id, "init_completed")
		conn, _ := w.at(id, "session_connected")
		reg, _ := w.at(id, "agent_registered")
		r2i.addDur(at.Sub(t0))
		r2c.addDur(conn.Sub(t0))
		c2r.addDur(reg.Sub(conn))
		reg2i.addDur(at.Sub(reg))
		listening, err := k.listeningAt(ctx, fmt.Sprintf("clawker.k%03d", i))
		if err != nil {
			return err
		}
		l2i.addDur(at.Sub(listening))
		return nil
	}
	if err := startOne(0); err != nil {
		return err
	}
	steps, err := k.initSteps(ctx, "k000")
	if err != nil {
		return err
	}
	res.InitSteps = steps
	anchorOne := func(int) error {
		start := time.Now()
		for range steps {
			out, err := exec.CommandContext(ctx, k.kubectl, "--kubeconfig", os.Getenv("KUBECONFIG"), "-n", k.ns,
				"exec", "clawker.k000", "-c", consts.PodAgentContainer, "--", "sh", "-c", "true").CombinedOutput()
			if err != nil {
				return fmt.Errorf("kubectl exec anchor: %v: %s", err, out)
			}
		}
		anchor.addDur(time.Since(start))
		return nil
	}
	i := 0
	err = alternate(variant{n - 1, func(int) error { i++; return startOne(i) }}, variant{anchorReps, anchorOne})
	res.Pods, res.RunToInit, res.AnchorKubectlSteps = r2i.n(), r2i.stat("ms"), anchor.stat("ms")
	res.ListeningToInit, res.RunToConnected, res.ConnectedToRegistered, res.RegisteredToInit = l2i.stat("ms"), r2c.stat("ms"), c2r.stat("ms"), reg2i.stat("ms")
	return err
}

// listeningAt is the time clawkerd logged "listening" in pod (its own
// timestamp: the node's clock, which the CP's events share). The kubelet
// serves the log only once it has seen the container start, which may be
// after InitCompleted.
func (k *kubeEnv) listeningAt(ctx context.Context, pod string) (time.Time, error) {
	var at time.Time
	err := waitFor(ctx, 30*time.Second, 50*time.Millisecond, pod+"'s listening line", func() error {
		rc, err := k.api.CoreV1().Pods(k.ns).GetLogs(pod, &corev1.PodLogOptions{Container: consts.PodAgentContainer}).Stream(ctx)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, `"event":"listening"`) {
				continue
			}
			if t, ok := ownTime(line); ok {
				at = t
				return nil
			}
		}
		return fmt.Errorf("no listening line yet")
	})
	return at, err
}

// initSteps is how many init steps the CP ran in agent name.
func (k *kubeEnv) initSteps(ctx context.Context, name string) (int, error) {
	r, err := k.must(ctx, "agents", "-o", "json")
	if err != nil {
		return 0, err
	}
	var rows []struct {
		Agent string `json:"agent"`
		Steps int    `json:"init_step_count"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		return 0, err
	}
	for _, row := range rows {
		if row.Agent == name && row.Steps > 0 {
			return row.Steps, nil
		}
	}
	return 0, fmt.Errorf("agent %s: no init steps in %s", name, r.stdout)
}

// measureScale starts n more pods at once and measures each one's
// Register (SessionConnected → AgentRegistered) and what the CP asked
// the API server for them.
func (k *kubeEnv) measureScale(ctx context.Context, w *evWatch, res *kubeResult, n int) error {
	calls0, regs0, err := k.cpCounters(ctx)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	ids := make([]string, 0, n)
	t0 := time.Now()
	if err := parallel(n, 8, func(i int) error {
		id, err := k.startAgent(ctx, kubeAgentImage, fmt.Sprintf("s%03d", i))
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return err
	}); err != nil {
		return err
	}
	var last time.Time
	if err := waitFor(ctx, 10*time.Minute, 100*time.Millisecond, fmt.Sprintf("%d pods registered", n), func() error {
		left := 0
		for _, id := range ids {
			at, ok := w.at(id, "agent_registered")
			if !ok {
				left++
			} else if at.After(last) {
				last = at
			}
		}
		if left > 0 {
			return fmt.Errorf("%d not registered", left)
		}
		return nil
	}); err != nil {
		return err
	}
	var c2r sample
	for _, id := range ids {
		conn, ok1 := w.at(id, "session_connected")
		reg, ok2 := w.at(id, "agent_registered")
		if ok1 && ok2 {
			c2r.addDur(reg.Sub(conn))
		}
	}
	calls1, regs1, err := k.cpCounters(ctx)
	if err != nil {
		return err
	}
	res.ScalePods, res.ConnectedToRegister = n, c2r.stat("ms")
	res.AllRegisteredMs = float64(last.Sub(t0)) / float64(time.Millisecond)
	res.Registers, res.APICalls = regs1-regs0, calls1-calls0
	return nil
}

// cpCounters reads the CP pod's /metrics: its pod GETs and LISTs, and
// its successful Registers.
func (k *kubeEnv) cpCounters(ctx context.Context) (calls, registers float64, err error) {
	pods, err := k.api.CoreV1().Pods(k.ns).List(ctx, metav1.ListOptions{LabelSelector: kubecp.AppLabel + "=" + kubecp.Name})
	if err != nil || len(pods.Items) != 1 {
		return 0, 0, fmt.Errorf("the CP pod: %d found (%v)", len(pods.Items), err)
	}
	url := "http://" + pods.Items[0].Status.PodIP + ":" + strconv.Itoa(consts.PortHealth) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	series := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, v, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(name, "#") {
			series[name], _ = strconv.ParseFloat(v, 64)
		}
	}
	const reqs = "clawker_cp_kube_api_requests_total"
	calls = series[reqs+`{resource="pods",verb="get"}`] + series[reqs+`{resource="pods",verb="list"}`]
	return calls, series[`clawker_cp_registrations_total{outcome="ok",reason=""}`], nil
}
