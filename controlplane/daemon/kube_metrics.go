package daemon

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// kubeRequests counts the CP's Kubernetes API requests by verb and
// resource: the figure behind "one API call per Register", and an
// operator's view of what the CP costs the API server.
type kubeRequests struct {
	next http.RoundTripper
	c    *prometheus.CounterVec
}

func newKubeRequests(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawker_cp_kube_api_requests_total", Help: "Kubernetes API requests by verb and resource.",
	}, []string{"verb", "resource"})
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}

func (k kubeRequests) RoundTrip(r *http.Request) (*http.Response, error) {
	resource, collection := apiResource(r.URL.Path)
	verb := strings.ToLower(r.Method)
	switch {
	case verb == "get" && r.URL.Query().Get("watch") == "true":
		verb = "watch"
	case verb == "get" && collection:
		verb = "list"
	}
	k.c.WithLabelValues(verb, resource).Inc()
	return k.next.RoundTrip(r)
}

// WrappedRoundTripper lets client-go reach the transport under the
// counter (to cancel a request, it logged "unable to cancel request"
// without it).
func (k kubeRequests) WrappedRoundTripper() http.RoundTripper { return k.next }

// apiResource is the resource a namespaced API path names, and whether
// the path is its collection: /api/v1/namespaces/NS/pods/NAME → pods, false.
func apiResource(path string) (string, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			return parts[i+2], i+3 == len(parts)
		}
	}
	return parts[len(parts)-1], true
}
