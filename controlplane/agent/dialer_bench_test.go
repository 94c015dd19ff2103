package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/internal/logger"
)

// benchAgent serves a real in-process clawkerd for id (Match row added).
func benchAgent(b *testing.B, env *dtEnv, id string) {
	b.Helper()
	leaf := env.pki.agentLeaf(b, "proj", "dev", id)
	srv, err := clawkerd.NewServer(clawkerd.Config{
		Cert:           tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert},
		CAPool:         env.pki.pool,
		AgentName:      "dev",
		Project:        "proj",
		InitMarkerPath: filepath.Join(b.TempDir(), "initialized"),
		Console:        io.Discard,
	}, logger.Nop())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, ln)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	addRow(b, env.reg, id, leaf)
	env.targets.set(id, DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"})
}

// BenchmarkDialToInit measures, for n agents dialed together, the time
// from DialAgent to SessionConnected and to InitCompleted (full first-start
// plan over real in-process clawkerd Sessions, shell steps included), and
// the CP heap per live Session. Numbers only; nothing is asserted.
func BenchmarkDialToInit(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			var connected, inited time.Duration
			var heapPer float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				env := newDTEnv(b, nil)
				ids := make([]string, n)
				for j := range ids {
					ids[j] = dtContainerID(b)
					benchAgent(b, env, ids[j])
				}
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				b.StartTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for _, id := range ids {
					wg.Add(1)
					go func(id string) {
						defer wg.Done()
						env.dialer.DialAgent(context.Background(), id)
					}(id)
				}
				wg.Wait()
				for _, id := range ids {
					env.rec.wait(b, id, EventInitCompleted)
				}
				b.StopTimer()
				var lastConn, lastInit time.Time
				for _, id := range ids {
					for _, e := range env.rec.events(id) {
						switch v := e.(type) {
						case SessionConnected:
							if v.At.After(lastConn) {
								lastConn = v.At
							}
						case InitCompleted:
							if v.At.After(lastInit) {
								lastInit = v.At
							}
						}
					}
				}
				connected += lastConn.Sub(start)
				inited += lastInit.Sub(start)
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				heapPer += (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
				env.dialer.CancelAll()
				b.StartTimer()
			}
			b.ReportMetric(float64(connected.Microseconds())/float64(b.N), "us-to-all-connected")
			b.ReportMetric(float64(inited.Microseconds())/float64(b.N), "us-to-all-initialized")
			b.ReportMetric(heapPer/float64(b.N), "heap-B/session")
		})
	}
}
