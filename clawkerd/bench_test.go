package clawkerd

import (
	"fmt"
	"testing"
)

// BenchmarkSessionLoopback measures ShellCommand round-trip latency and
// output throughput over a real TLS Session on loopback (in-process
// server, real processes). BenchmarkContainer (pid1_e2e_test.go) measures
// the same against a container next to docker exec.
func BenchmarkSessionLoopback(b *testing.B) {
	ts := startServer(b, nil)
	c := ts.session(b)
	n := 0
	run := func(b *testing.B, argv ...string) int {
		n++
		res := c.run(fmt.Sprintf("b%d", n), stages(stage(argv...)))
		if res.done == nil {
			b.Fatalf("%+v", res.err)
		}
		return len(res.output)
	}
	b.Run("roundtrip", func(b *testing.B) {
		for b.Loop() {
			run(b, "true")
		}
	})
	const size = 8 << 20
	b.Run("throughput", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if got := run(b, "head", "-c", fmt.Sprint(size), "/dev/zero"); got != size {
				b.Fatalf("got %d bytes", got)
			}
		}
	})
}
