package dockerevents

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/testenv"
)

const dockerTestLabel = "dockerevents"

// dockerClient returns a client for the machine's engine, skipping (or,
// under CLAWKER_E2E=1, failing) when there is none.
func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = cli.Ping(ctx, client.PingOptions{})
	}
	if err != nil {
		testenv.Unavailable(t, "no docker engine: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// busyboxImage imports a minimal image holding the host's static busybox.
func busyboxImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testenv.Unavailable(t, "no /bin/busybox to build a test image: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	_ = tw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))})
	_, _ = tw.Write(bb)
	for _, l := range []string{"sh", "sleep"} {
		_ = tw.WriteHeader(&tar.Header{Name: "bin/" + l, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	const ref = "clawker-dockerevents-busybox:test"
	rc, err := cli.ImageImport(context.Background(), client.ImageImportSource{Source: &buf, SourceName: "-"}, ref,
		client.ImageImportOptions{Changes: []string{"LABEL " + consts.LabelTest + "=" + dockerTestLabel}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, rc)
	_ = rc.Close()
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true})
	})
	return ref
}

func sweep(cli *client.Client) {
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", consts.LabelTest+"="+dockerTestLabel)})
	if err != nil {
		return
	}
	for _, c := range res.Items {
		_, _ = cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
	}
}

// TestFeederRealEngine checks the stream, its filters and the since/list
// calls against the machine's real engine: a labelled container's start,
// die and destroy arrive as DockerEvents.
func TestFeederRealEngine(t *testing.T) {
	cli := dockerClient(t)
	sweep(cli)
	t.Cleanup(func() { sweep(cli) })
	img := busyboxImage(t, cli)

	b := make([]byte, 6)
	_, _ = rand.Read(b)
	run := hex.EncodeToString(b)
	bus := &collector{}
	f, err := New(cli, bus, nil, WithLabel("dev.clawker.test.run", run))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, "feeder connected", func() bool { return f.Health().Connected })

	created, err := cli.ContainerCreate(context.Background(), client.ContainerCreateOptions{
		Config: &container.Config{Image: img, Cmd: []string{"/bin/sleep", "300"},
			Labels: map[string]string{consts.LabelTest: dockerTestLabel, "dev.clawker.test.run": run}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := created.ID
	if _, err := cli.ContainerStart(context.Background(), id, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "start event", func() bool { return bus.find(ActionStart, id, false) })
	if _, err := cli.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "die event", func() bool { return bus.find(ActionDie, id, false) })
	waitFor(t, "destroy event", func() bool { return bus.find(ActionDestroy, id, false) })
	for _, e := range bus.snapshot() {
		if e.ContainerID != id {
			t.Fatalf("label filter let through %+v", e)
		}
		if e.At.IsZero() || e.Labels[consts.LabelTest] != dockerTestLabel {
			t.Fatalf("event missing time or labels: %+v", e)
		}
	}
	if h := f.Health(); h.Events < 3 || h.LastEvent.IsZero() {
		t.Fatalf("health = %+v", h)
	}

	// Resume: a feeder whose last seen event is the start replays what
	// followed it from the engine (the since format is accepted) and skips
	// the boundary event itself.
	var startAt time.Time
	for _, e := range bus.snapshot() {
		if e.Action == ActionStart {
			startAt = e.At
		}
	}
	bus2 := &collector{}
	f2, err := New(cli, bus2, nil, WithLabel("dev.clawker.test.run", run))
	if err != nil {
		t.Fatal(err)
	}
	f2.lastNano, f2.lastKeys = startAt.UnixNano(), map[string]struct{}{ActionStart + "/" + id: {}}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() {
		defer close(done2)
		_ = f2.Run(ctx2)
	}()
	defer func() {
		cancel2()
		<-done2
	}()
	waitFor(t, "replayed destroy", func() bool { return bus2.find(ActionDestroy, id, false) })
	if !bus2.find(ActionDie, id, false) || bus2.find(ActionStart, id, false) {
		t.Fatalf("replay = %+v", bus2.snapshot())
	}
}
