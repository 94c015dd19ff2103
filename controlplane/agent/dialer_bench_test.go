package agent

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

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
					startRealClawkerd(b, env, ids[j])
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
