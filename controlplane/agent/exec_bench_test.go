package agent

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/clawkerd"
	"github.com/clawker/clawker/internal/logger"
)

// benchClawkerd is startRealClawkerd for benchmarks (testing.TB).
func benchClawkerd(tb testing.TB, env *dtEnv, id string) {
	tb.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		tb.Skip("no /bin/sh on this host")
	}
	leaf := env.pki.agentLeaf(tb, "proj", "dev", id)
	srv, err := clawkerd.NewServer(clawkerd.Config{
		Cert:           tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert},
		CAPool:         env.pki.pool,
		AgentName:      "dev",
		Project:        "proj",
		InitMarkerPath: filepath.Join(tb.TempDir(), "initialized"),
		Console:        io.Discard,
	}, logger.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx, ln)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	addRow(tb, env.reg, id, leaf)
	env.targets.set(id, DialTarget{Address: ln.Addr().String(), AgentName: "dev", Project: "proj"})
}

// BenchmarkExecThroughput streams head -c of /dev/zero through a real
// clawkerd and the CP's Session exec path (TLS over loopback), the data
// plane of `clawker exec` minus the admin hop. Profile with -cpuprofile.
func BenchmarkExecThroughput(b *testing.B) {
	const size = 64 << 20
	b.Run("head", func(b *testing.B) {
		benchExec(b, size, []string{"head", "-c", strconv.Itoa(size), "/dev/zero"})
	})
	// 4 KiB writes, like busybox head in the agent image.
	b.Run("dd4k", func(b *testing.B) {
		benchExec(b, size, []string{"dd", "if=/dev/zero", "bs=4096", "count=" + strconv.Itoa(size/4096), "status=none"})
	})
}

func benchExec(b *testing.B, size int, argv []string) {
	env := newDTEnv(b, nil)
	id := dtContainerID(b)
	benchClawkerd(b, env, id)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(b, id, EventInitCompleted)
	dtWait(b, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{
			Argv: argv}}})
		if err != nil {
			b.Fatal(err)
		}
		got, chunks := 0, 0
		code := int32(-1)
		for r := range h.Responses() {
			if o := r.GetOutput(); o != nil {
				got += len(o.GetData())
				chunks++
			}
			if d := r.GetDone(); d != nil {
				code = d.GetFinalExitCode()
			}
		}
		if got != size || code != 0 {
			b.Fatalf("got %d bytes, exit %d; want %d, 0", got, code, size)
		}
		b.ReportMetric(float64(got)/float64(chunks), "B/chunk")
	}
}
