package kube

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

// The egress test's policy: plain HTTP to one host, an intercepted HTTPS
// host, and a denied one.
const kubeEgressPolicy = `egress:
  defaults: false
  allow:
    - {name: web, host: allowed.test, ports: [80]}
    - {name: icp-read, host: icp.test, ports: [443], intercept: true, methods: [GET], paths: [/v1/]}
  deny:
    - {name: no-evil, host: evil.test}
`

// TestEgressFromAPod: an agent pod reaches the outside only through the
// CP Service's egress gateway, as on Docker. Its resolver and proxy are
// the gateway's, the project's policy (pushed with egress reload through
// the port-forward) decides, an intercepted host verifies against the
// CA clawkerd appended to the image's bundle, and a direct connection is
// cut by the isolation policy.
func TestEgressFromAPod(t *testing.T) {
	c := setup(t)
	ns := c.namespace(t)
	fakeIP, fakeCA := startKubeFakenet(t, c, ns)
	k := &kubeCLI{c: c, ns: ns, home: t.TempDir(), env: []string{
		"CLAWKER_CP_EGRESS_UPSTREAM_DNS=" + net.JoinHostPort(fakeIP, "53"),
		"CLAWKER_CP_EGRESS_UPSTREAM_CA=" + fakeCA,
	}}
	k.must(t, "init")
	k.must(t, "cp", "up", "--image", cpImage, "--clawkerd-image", clawkerdImage, "--volume", registryPV(t, c, ns))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "clawker.yaml"), []byte(kubeEgressPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	k.must(t, "egress", "reload", "--project", "eg", "--project-dir", dir)
	id := strings.TrimSpace(k.must(t, "run", "-d", "--project", "eg", "--agent", "a1", agentImage, "sleep", "3600"))
	testenv.Eventually(t, 3*time.Minute, "a1 trusted and initialised", func() error {
		if r := k.agents(t)["a1"]; r.ContainerID != id || !r.Trusted || r.Init != "completed" {
			return fmt.Errorf("%+v; pod: %s", r, c.podStatus(context.Background(), ns, "clawker.eg.a1"))
		}
		return nil
	})
	fakenet := func(args ...string) (string, bool) {
		out, _, code := k.run(t, append([]string{"exec", "--project", "eg", "a1", "--", "/fakenet/fakenet"}, args...)...)
		return strings.TrimSpace(out), code == 0
	}
	ok := func(what string, args ...string) {
		t.Helper()
		if out, good := fakenet(args...); !good {
			t.Errorf("%s: want success, got %s", what, out)
		}
	}
	fails := func(what string, args ...string) string {
		t.Helper()
		out, good := fakenet(args...)
		if good {
			t.Errorf("%s: want failure, got %s", what, out)
		}
		return out
	}
	ok("http allowed.test through the proxy", "get", "http://allowed.test/")
	// Only the image's bundle (-ca names no file): clawkerd appended the
	// gateway's CA to it, and the pod's copy is where Node looks.
	ok("intercepted GET, the image's bundle", "get", "-ca=/none", "https://icp.test/v1/items")
	ok("intercepted GET, the installed CA", "get", "-ca="+consts.EgressCAPath, "https://icp.test/v1/items")
	if out := fails("intercepted GET /v2/", "get", "-ca=/none", "https://icp.test/v2/items"); !strings.Contains(out, "403") {
		t.Errorf("GET /v2/: want the gateway's 403, got %s", out)
	}
	fails("denied host", "get", "http://evil.test/")
	// The pod's resolver is the gateway, which answers only allowed names.
	ok("DNS allowed.test", "dns", "allowed.test")
	fails("DNS evil.test", "dns", "evil.test")
	// Around the gateway: the isolation policy admits only the CP.
	fails("direct, no proxy", "get", "-noproxy", "http://"+fakeIP+"/")
	fails("DNS straight to the fake internet", "dns", "-server", net.JoinHostPort(fakeIP, "53"), "allowed.test")

	log := k.must(t, "egress", "log", "--since", "10m", "--agent", "a1")
	if !strings.Contains(log, "egress_denied") || !strings.Contains(log, "evil.test") || !strings.Contains(log, "egress_allowed") {
		t.Fatalf("egress log for a1 lacks the decisions:\n%s", log)
	}
}

// startKubeFakenet runs the fake internet in ns behind a Service, whose
// cluster IP every zone name resolves to; it returns that IP and the
// fake internet's CA (the pod prints it).
func startKubeFakenet(t *testing.T, c *cluster, ns string) (string, string) {
	t.Helper()
	ctx := context.Background()
	sel := map[string]string{"app": "fakenet", consts.LabelTest: testLabel}
	port := func(name string, p int32, proto corev1.Protocol) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: p, TargetPort: intstr.FromInt32(p), Protocol: proto}
	}
	svc, err := c.kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "fakenet", Labels: sel},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{
			port("dns", 53, corev1.ProtocolUDP), port("dns-tcp", 53, corev1.ProtocolTCP),
			port("http", 80, corev1.ProtocolTCP), port("https", 443, corev1.ProtocolTCP)}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := svc.Spec.ClusterIP
	serve := fmt.Sprintf("/fakenet/fakenet serve -zone allowed.test,icp.test,evil.test -ip %s -ca /tmp/ca.pem & "+
		"while [ ! -s /tmp/ca.pem ]; do sleep 0.1; done; cat /tmp/ca.pem; wait", ip)
	if _, err := c.kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "fakenet", Labels: sel},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "fakenet", Image: agentImage,
			ImagePullPolicy: corev1.PullNever, Command: []string{"sh", "-c", serve}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ca string
	testenv.Eventually(t, 2*time.Minute, "fakenet serving", func() error {
		b, err := c.kube.CoreV1().Pods(ns).GetLogs("fakenet", &corev1.PodLogOptions{}).Do(ctx).Raw()
		if err != nil || !strings.Contains(string(b), "END CERTIFICATE") {
			return fmt.Errorf("log %q (%v); pod: %s", b, err, c.podStatus(ctx, ns, "fakenet"))
		}
		ca = string(b[strings.Index(string(b), "-----BEGIN"):])
		return nil
	})
	return ip, ca
}
