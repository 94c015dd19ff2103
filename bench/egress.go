package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/egress"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/egress/egressca"
)

// egressResult is figure 6: the egress gateway (the CP component, in
// process on loopback) against a direct connection, alternated in the
// same run. Attribution uses a stub peer lookup (the real one answers
// from its index after the first lookup of a peer).
type egressResult struct {
	DownloadMiB    int     `json:"download_mib"`
	DirectMiBs     stat    `json:"direct_mib_per_s"`
	ProxiedMiBs    stat    `json:"proxied_mib_per_s"`
	ThroughputLoss float64 `json:"throughput_loss_fraction"` // 1 - proxied/direct, medians
	// CPU time of the whole bench process (client, origin and, when
	// proxied, the gateway) per download: the gateway's own cost, which
	// wall-clock throughput on a loaded machine hides.
	DirectCPUms      stat `json:"direct_cpu_ms_per_download"`
	ProxiedCPUms     stat `json:"proxied_cpu_ms_per_download"`
	Requests         int  `json:"requests"`
	DirectNewConn    stat `json:"direct_new_conn_ms"`
	ProxiedNewConn   stat `json:"proxied_new_conn_ms"`
	DirectKeepAlive  stat `json:"direct_keepalive_ms"`
	ProxiedKeepAlive stat `json:"proxied_keepalive_ms"`
}

type benchPeers struct{ rc agent.ResolvedContainer }

func (b benchPeers) LookupByIP(context.Context, netip.Addr) (agent.ResolvedContainer, error) {
	return b.rc, nil
}

type nopBus struct{}

func (nopBus) Publish(overseer.Event) {}

func measureEgress(ctx context.Context, mib, requests, reps int) (egressResult, error) {
	res := egressResult{DownloadMiB: mib, Requests: requests}
	// The origin's certificate names web.test: the gateway checks the SNI
	// against the CONNECT host.
	ca, err := egressca.NewCA()
	if err != nil {
		return res, err
	}
	leaf, err := ca.Leaf("web.test")
	if err != nil {
		return res, err
	}
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, _ := strconv.Atoi(r.URL.Query().Get("mib")); n > 0 {
			w.Header().Set("Content-Length", strconv.Itoa(n<<20))
			buf := make([]byte, 256<<10)
			for left := n << 20; left > 0; left -= len(buf) {
				if _, err := w.Write(buf[:min(len(buf), left)]); err != nil {
					return
				}
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	origin.TLS = &tls.Config{Certificates: []tls.Certificate{*leaf}}
	origin.StartTLS()
	defer origin.Close()
	_, port, _ := net.SplitHostPort(origin.Listener.Addr().String())
	zoneAddr, stopZone, err := benchZone()
	if err != nil {
		return res, err
	}
	defer stopZone()
	p, _ := auth.NewProjectSlug("bench")
	a, _ := auth.NewAgentName("bench")
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	svc, err := egress.Start(gctx, egress.Config{DNSAddr: "127.0.0.1:0", ProxyAddr: "127.0.0.1:0", UpstreamDNS: zoneAddr,
		Peers: benchPeers{agent.ResolvedContainer{ContainerID: "bench", Project: p, AgentName: a}}, Bus: nopBus{}})
	if err != nil {
		return res, err
	}
	defer svc.Close()
	svc.SetTrust(func(string) bool { return true })
	if _, err := svc.Reload("bench", []byte("defaults: false\nallow: [{host: web.test}]\n"), "bench"); err != nil {
		return res, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	proxyURL, _ := url.Parse("http://" + svc.Addr("proxy"))
	client := func(proxied, keepAlive bool) *http.Client {
		tr := &http.Transport{DisableKeepAlives: !keepAlive, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "web.test"}}
		if proxied {
			tr.Proxy = http.ProxyURL(proxyURL)
		} else {
			// Direct: what an agent with a route out would do.
			tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, "127.0.0.1:"+port)
			}
		}
		return &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	}
	base := "https://web.test:" + port + "/"
	get := func(c *http.Client, u string) (int64, error) {
		r, err := c.Get(u)
		if err != nil {
			return 0, err
		}
		defer r.Body.Close()
		n, err := io.Copy(io.Discard, r.Body)
		if err == nil && r.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", r.StatusCode)
		}
		return n, err
	}
	var dDown, pDown, dCPU, pCPU sample
	download := func(proxied bool, into, cpu *sample) variant {
		return variant{reps, func(int) error {
			cpu0 := processCPU()
			start := time.Now()
			n, err := get(client(proxied, false), fmt.Sprintf("%s?mib=%d", base, mib))
			if err != nil {
				return fmt.Errorf("download (proxied %v): %w", proxied, err)
			}
			into.add(float64(n) / (1 << 20) / time.Since(start).Seconds())
			cpu.addDur(processCPU() - cpu0)
			return nil
		}}
	}
	if err := alternate(download(false, &dDown, &dCPU), download(true, &pDown, &pCPU)); err != nil {
		return res, err
	}
	res.DirectMiBs, res.ProxiedMiBs = dDown.stat("MiB/s"), pDown.stat("MiB/s")
	res.DirectCPUms, res.ProxiedCPUms = dCPU.stat("ms"), pCPU.stat("ms")
	res.ThroughputLoss = 1 - res.ProxiedMiBs.P50/res.DirectMiBs.P50
	for _, keep := range []bool{false, true} {
		dc, pc := client(false, keep), client(true, keep)
		var d, pr sample
		small := func(c *http.Client, into *sample) variant {
			return variant{requests, func(int) error {
				start := time.Now()
				if _, err := get(c, base); err != nil {
					return fmt.Errorf("small request: %w", err)
				}
				into.addDur(time.Since(start))
				return nil
			}}
		}
		if err := alternate(small(dc, &d), small(pc, &pr)); err != nil {
			return res, err
		}
		if keep {
			res.DirectKeepAlive, res.ProxiedKeepAlive = d.stat("ms"), pr.stat("ms")
		} else {
			res.DirectNewConn, res.ProxiedNewConn = d.stat("ms"), pr.stat("ms")
		}
	}
	return res, nil
}

// processCPU is this process's user plus system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchZone answers web.test with 127.0.0.1, as the gateway's upstream.
func benchZone() (string, func(), error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		if q := r.Question[0]; q.Name == "web.test." && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(127, 0, 0, 1)})
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	return pc.LocalAddr().String(), func() { _ = srv.Shutdown() }, nil
}

// egressRows renders figure 6.
func egressRows(rep *report) []row {
	r := rep.Egress
	if r == nil || r.ProxiedKeepAlive.N == 0 {
		return nil
	}
	addNew := r.ProxiedNewConn.P50 - r.DirectNewConn.P50
	addKeep := r.ProxiedKeepAlive.P50 - r.DirectKeepAlive.P50
	return []row{
		{fmt.Sprintf("6. Egress gateway: %d MiB HTTPS download (CONNECT tunnel)", r.DownloadMiB), r.ProxiedMiBs.String(), "direct: " + r.DirectMiBs.String(),
			fmt.Sprintf("%.0f %% throughput lost", 100*r.ThroughputLoss), verdict("< 10 %", r.ThroughputLoss < 0.10, r.DirectMiBs, r.ProxiedMiBs)},
		{fmt.Sprintf("6. Egress gateway: process CPU per %d MiB download (client + origin, + gateway when proxied)", r.DownloadMiB), r.ProxiedCPUms.String(), "direct: " + r.DirectCPUms.String(),
			fmt.Sprintf("+%.0f %% CPU p50", 100*(r.ProxiedCPUms.P50/r.DirectCPUms.P50-1)), "—"},
		{fmt.Sprintf("6. Egress gateway: %d small HTTPS requests, new connection each", r.Requests), r.ProxiedNewConn.String(), "direct: " + r.DirectNewConn.String(),
			fmt.Sprintf("+%.3f ms p50", addNew), verdict("< 1 ms p50 added", addNew < 1, r.DirectNewConn, r.ProxiedNewConn)},
		{fmt.Sprintf("6. Egress gateway: %d small HTTPS requests, kept-alive tunnel", r.Requests), r.ProxiedKeepAlive.String(), "direct: " + r.DirectKeepAlive.String(),
			fmt.Sprintf("+%.3f ms p50", addKeep), verdict("< 1 ms p50 added", addKeep < 1, r.DirectKeepAlive, r.ProxiedKeepAlive)},
	}
}
