package agent

import (
	"context"
	"strconv"
	"strings"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
)

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

// benchAgent starts a real clawkerd and returns its env and ID once its
// Session is ready for Exec.
func benchAgent(b *testing.B) (*dtEnv, string) {
	env := newDTEnv(b, nil)
	id := dtContainerID(b)
	startRealClawkerd(b, env, id)
	env.dialer.DialAgent(context.Background(), id)
	env.rec.wait(b, id, EventInitCompleted)
	dtWait(b, "session ready", func() bool {
		s := env.dialer.Sessions()
		return len(s) == 1 && s[0].Ready
	})
	return env, id
}

func benchExec(b *testing.B, size int, argv []string) {
	env, id := benchAgent(b)
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

// BenchmarkExecStdinThroughput pipes 64 MiB into `wc -c` through the CP's
// credit-paced Stdin and a real clawkerd (the `exec -i` data plane minus
// the admin hop), in messages of the CLI's size.
func BenchmarkExecStdinThroughput(b *testing.B) {
	const size = 64 << 20
	for _, msg := range []int{32 << 10, 256 << 10} {
		b.Run(strconv.Itoa(msg>>10)+"KiB", func(b *testing.B) {
			env, id := benchAgent(b)
			chunk := make([]byte, msg)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				h, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{Stages: []*clawkerdv1.PipeStage{{
					Argv: []string{"wc", "-c"}}}})
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for sent := 0; sent < size; sent += msg {
						if h.Stdin(chunk) != nil {
							return
						}
					}
					_ = h.CloseStdin()
				}()
				var out []byte
				for r := range h.Responses() {
					out = append(out, r.GetOutput().GetData()...)
				}
				if got := strings.TrimSpace(string(out)); got != strconv.Itoa(size) {
					b.Fatalf("wc -c = %q, want %d", got, size)
				}
			}
		})
	}
}
