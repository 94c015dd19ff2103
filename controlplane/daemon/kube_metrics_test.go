package daemon

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

func TestKubeRequestsCountsByVerbAndResource(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := newKubeRequests(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	client := &http.Client{Transport: kubeRequests{next: http.DefaultTransport, c: c}}
	for _, path := range []string{"/api/v1/namespaces/ns/pods/alpha", "/api/v1/namespaces/ns/pods/beta",
		"/api/v1/namespaces/ns/pods?fieldSelector=status.podIP%3D10.0.0.1", "/api/v1/namespaces/ns/pods?watch=true"} {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := testutil.ToFloat64(c.WithLabelValues("get", "pods")); got != 2 {
		t.Fatalf("get pods = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.WithLabelValues("list", "pods")); got != 1 {
		t.Fatalf("list pods = %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.WithLabelValues("watch", "pods")); got != 1 {
		t.Fatalf("watch pods = %v, want 1", got)
	}
}

// client-go unwraps the counter to cancel a request on the transport
// under it (utilnet.RoundTripperWrapper).
func TestKubeRequestsUnwrapsToItsTransport(t *testing.T) {
	next := &http.Transport{}
	var rt http.RoundTripper = kubeRequests{next: next}
	w, ok := rt.(utilnet.RoundTripperWrapper)
	if !ok || w.WrappedRoundTripper() != next {
		t.Fatal("kubeRequests does not expose the transport it wraps")
	}
}
