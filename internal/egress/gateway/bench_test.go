package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"
)

// The proxy's overhead against a direct connection, measured in the
// same run on loopback: `go test -bench . -run '^$' ./internal/egress/gateway/`.
// Each iteration runs the direct and the proxied variant back to back.

const benchPolicy = `
defaults: false
allow: [{name: web, host: web.test}]
`

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func benchClients(b *testing.B, e *env, keepAlive bool) (direct, proxied *http.Client) {
	dialer := &net.Dialer{}
	direct = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: !keepAlive,
		TLSClientConfig:   &tls.Config{RootCAs: e.roots},
		// An agent without the gateway would resolve web.test itself.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return dialer.DialContext(ctx, network, "127.0.0.1:"+port)
		},
	}}
	u, _ := url.Parse(e.proxy.URL)
	proxied = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: !keepAlive,
		Proxy:             http.ProxyURL(u),
		TLSClientConfig:   &tls.Config{RootCAs: e.roots},
	}}
	b.Cleanup(direct.CloseIdleConnections)
	b.Cleanup(proxied.CloseIdleConnections)
	return direct, proxied
}

func fetch(b *testing.B, c *http.Client, u string) int64 {
	resp, err := c.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	return n
}

func BenchmarkDownload100MiB(b *testing.B) { benchDownload(b, false) }

// BenchmarkPlainHTTPDownload100MiB is an http:// download, forwarded by
// the proxy's reverse proxy rather than tunnelled.
func BenchmarkPlainHTTPDownload100MiB(b *testing.B) { benchDownload(b, true) }

// benchDownload times 100 MiB fetched directly and through the proxy,
// alternating, over https (a CONNECT tunnel) or plain http.
func benchDownload(b *testing.B, plain bool) {
	const size = 100 << 20
	e := newEnv(&testing.T{}, benchPolicy, nil)
	e.name("web.test")
	blob := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = io.CopyN(w, zeroReader{}, size)
	})
	var u string
	if plain {
		u = "http://web.test:" + e.httpUpstream(blob) + "/blob"
	} else {
		u = "https://web.test:" + e.httpsUpstream(blob) + "/blob"
	}
	direct, proxied := benchClients(b, e, true)
	var tDirect, tProxy time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if fetch(b, direct, u) != size {
			b.Fatal("short direct read")
		}
		tDirect += time.Since(start)
		start = time.Now()
		if fetch(b, proxied, u) != size {
			b.Fatal("short proxied read")
		}
		tProxy += time.Since(start)
	}
	mb := float64(size) / (1 << 20) * float64(b.N)
	b.ReportMetric(mb/tDirect.Seconds(), "direct-MiB/s")
	b.ReportMetric(mb/tProxy.Seconds(), "proxied-MiB/s")
	b.ReportMetric(tProxy.Seconds()/tDirect.Seconds(), "time-ratio")
	b.Logf("100 MiB (plain http %v): direct %.0f MiB/s, proxied %.0f MiB/s, proxied/direct time ratio %.3f",
		plain, mb/tDirect.Seconds(), mb/tProxy.Seconds(), tProxy.Seconds()/tDirect.Seconds())
}

// BenchmarkUpload100MiB is the other direction of the tunnel: the agent
// sends, as for a git push or an artifact upload.
func BenchmarkUpload100MiB(b *testing.B) {
	const size = 100 << 20
	e := newEnv(&testing.T{}, benchPolicy, nil)
	e.name("web.test")
	port := e.httpsUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
	}))
	direct, proxied := benchClients(b, e, true)
	u := "https://web.test:" + port + "/up"
	post := func(c *http.Client) {
		resp, err := c.Post(u, "application/octet-stream", io.LimitReader(zeroReader{}, size))
		if err != nil {
			b.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != strconv.Itoa(size) {
			b.Fatalf("upstream got %q bytes", got)
		}
	}
	var tDirect, tProxy time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		post(direct)
		tDirect += time.Since(start)
		start = time.Now()
		post(proxied)
		tProxy += time.Since(start)
	}
	mb := float64(size) / (1 << 20) * float64(b.N)
	b.ReportMetric(mb/tDirect.Seconds(), "direct-MiB/s")
	b.ReportMetric(mb/tProxy.Seconds(), "proxied-MiB/s")
	b.ReportMetric(tProxy.Seconds()/tDirect.Seconds(), "time-ratio")
}

func BenchmarkSmallHTTPS1000(b *testing.B) {
	for _, keepAlive := range []bool{true, false} {
		name := "keepalive"
		if !keepAlive {
			name = "conn-per-request"
		}
		b.Run(name, func(b *testing.B) { benchSmall(b, keepAlive) })
	}
}

func benchSmall(b *testing.B, keepAlive bool) {
	e := newEnv(&testing.T{}, benchPolicy, nil)
	e.name("web.test")
	port := e.httpsUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	direct, proxied := benchClients(b, e, keepAlive)
	u := "https://web.test:" + port + "/small"
	var dLat, pLat []time.Duration
	var tDirect, tProxy time.Duration
	b.ResetTimer()
	for b.Loop() {
		for _, v := range []struct {
			c   *http.Client
			lat *[]time.Duration
			tot *time.Duration
		}{{direct, &dLat, &tDirect}, {proxied, &pLat, &tProxy}} {
			start := time.Now()
			for range 1000 {
				t0 := time.Now()
				fetch(b, v.c, u)
				*v.lat = append(*v.lat, time.Since(t0))
			}
			*v.tot += time.Since(start)
		}
	}
	slices.Sort(dLat)
	slices.Sort(pLat)
	p50d, p50p := dLat[len(dLat)/2], pLat[len(pLat)/2]
	b.ReportMetric(float64(p50d.Microseconds()), "direct-p50-µs")
	b.ReportMetric(float64(p50p.Microseconds()), "proxied-p50-µs")
	b.ReportMetric(float64((p50p - p50d).Microseconds()), "added-p50-µs")
	b.ReportMetric(tProxy.Seconds()/tDirect.Seconds(), "time-ratio")
	b.Logf("1000 small HTTPS (keepalive=%v): p50 direct %v proxied %v (+%v), total time ratio %.3f",
		keepAlive, p50d, p50p, p50p-p50d, tProxy.Seconds()/tDirect.Seconds())
}
