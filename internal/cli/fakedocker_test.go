package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/volume"
	mobyclient "github.com/moby/moby/client"
)

// fakeDocker is an in-memory engine at the CLI's Docker boundary. It
// implements the calls the tested commands make; any other call hits the
// nil embedded interface and panics, failing the test.
type fakeDocker struct {
	dockerAPI
	mu         sync.Mutex
	containers []*fakeCtr
	volumes    map[string]map[string]string // name → labels
	images     map[string]string            // ref → JSON of its inspect result
	nextID     int
	clock      int      // seconds on the fake start clock
	calls      []string // "Op id" in order
}

type fakeCtr struct {
	id, name string
	labels   map[string]string
	state    container.ContainerState
	tty      bool
	image    string
	env      []string
	cmd      []string
	hc       container.HostConfig      // as created
	nets     *network.NetworkingConfig // as created
	started  time.Time                 // set by each start
	noStart  bool                      // a start fails, as with a network gone since
	copied   [][]byte                  // CopyToContainer contents
	stdout   string
	stderr   string
}

func (f *fakeDocker) record(op, id string) {
	f.calls = append(f.calls, op+" "+id)
}

// called reports whether op was made on id.
func (f *fakeDocker) called(op, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if c == op+" "+id {
			return true
		}
	}
	return false
}

func (f *fakeDocker) find(ref string) *fakeCtr {
	for _, c := range f.containers {
		if c.id == ref || c.name == ref || strings.TrimPrefix(ref, "/") == c.name {
			return c
		}
	}
	return nil
}

func (f *fakeDocker) Ping(context.Context, mobyclient.PingOptions) (mobyclient.PingResult, error) {
	return mobyclient.PingResult{}, nil
}

func (f *fakeDocker) Close() error { return nil }

func (f *fakeDocker) DaemonHost() string { return "unix:///var/run/docker.sock" }

// ContainerList honours label=k=v filters, as the engine does.
func (f *fakeDocker) ContainerList(_ context.Context, o mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out mobyclient.ContainerListResult
next:
	for _, c := range f.containers {
		for kv := range o.Filters["label"] {
			k, v, _ := strings.Cut(kv, "=")
			if c.labels[k] != v {
				continue next
			}
		}
		if !o.All && c.state != container.StateRunning {
			continue
		}
		out.Items = append(out.Items, container.Summary{ID: c.id, Names: []string{"/" + c.name}, Labels: c.labels, State: c.state})
	}
	return out, nil
}

func (f *fakeDocker) ContainerInspect(_ context.Context, ref string, _ mobyclient.ContainerInspectOptions) (mobyclient.ContainerInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(ref)
	if c == nil {
		return mobyclient.ContainerInspectResult{}, cerrdefs.ErrNotFound
	}
	hc := c.hc
	return mobyclient.ContainerInspectResult{Container: container.InspectResponse{ID: c.id, Name: "/" + c.name, Image: c.image,
		State: &container.State{Status: c.state, Running: c.state == container.StateRunning,
			StartedAt: c.started.Format(time.RFC3339Nano)},
		Config: &container.Config{Labels: c.labels, Tty: c.tty, Env: c.env, Cmd: c.cmd, Image: c.image}, HostConfig: &hc,
		NetworkSettings: &container.NetworkSettings{}}}, nil
}

func (f *fakeDocker) ContainerRemove(_ context.Context, ref string, o mobyclient.ContainerRemoveOptions) (mobyclient.ContainerRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(ref)
	if c == nil {
		return mobyclient.ContainerRemoveResult{}, cerrdefs.ErrNotFound
	}
	if c.state == container.StateRunning && !o.Force {
		return mobyclient.ContainerRemoveResult{}, cerrdefs.ErrConflict
	}
	f.record("remove", c.id)
	f.containers = removeCtr(f.containers, c)
	return mobyclient.ContainerRemoveResult{}, nil
}

func removeCtr(cs []*fakeCtr, c *fakeCtr) []*fakeCtr {
	out := cs[:0]
	for _, x := range cs {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}

func (f *fakeDocker) setState(op, ref string, st container.ContainerState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(ref)
	if c == nil {
		return cerrdefs.ErrNotFound
	}
	f.record(op, c.id)
	if c.noStart && op == "start" {
		return errors.New("fake: start refused")
	}
	c.state = st
	if st == container.StateRunning {
		f.clock++
		c.started = time.Unix(int64(f.clock), 0).UTC()
	}
	return nil
}

func (f *fakeDocker) ContainerStop(_ context.Context, ref string, o mobyclient.ContainerStopOptions) (mobyclient.ContainerStopResult, error) {
	op := "stop"
	if o.Timeout != nil {
		op = "stop-t" + strconv.Itoa(*o.Timeout)
	}
	return mobyclient.ContainerStopResult{}, f.setState(op, ref, container.StateExited)
}

func (f *fakeDocker) ContainerStart(_ context.Context, ref string, _ mobyclient.ContainerStartOptions) (mobyclient.ContainerStartResult, error) {
	return mobyclient.ContainerStartResult{}, f.setState("start", ref, container.StateRunning)
}

func (f *fakeDocker) ContainerRestart(_ context.Context, ref string, _ mobyclient.ContainerRestartOptions) (mobyclient.ContainerRestartResult, error) {
	return mobyclient.ContainerRestartResult{}, f.setState("restart", ref, container.StateRunning)
}

func (f *fakeDocker) ContainerLogs(_ context.Context, ref string, o mobyclient.ContainerLogsOptions) (mobyclient.ContainerLogsResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(ref)
	if c == nil {
		return nil, cerrdefs.ErrNotFound
	}
	f.record("logs", c.id)
	if c.tty {
		return io.NopCloser(strings.NewReader(c.stdout)), nil
	}
	var buf bytes.Buffer
	frame(&buf, 1, c.stdout)
	frame(&buf, 2, c.stderr)
	return io.NopCloser(&buf), nil
}

func (f *fakeDocker) NetworkInspect(context.Context, string, mobyclient.NetworkInspectOptions) (mobyclient.NetworkInspectResult, error) {
	return mobyclient.NetworkInspectResult{}, cerrdefs.ErrNotFound
}

func (f *fakeDocker) NetworkList(context.Context, mobyclient.NetworkListOptions) (mobyclient.NetworkListResult, error) {
	return mobyclient.NetworkListResult{Items: []network.Summary{}}, nil
}

func (f *fakeDocker) NetworkRemove(context.Context, string, mobyclient.NetworkRemoveOptions) (mobyclient.NetworkRemoveResult, error) {
	return mobyclient.NetworkRemoveResult{}, cerrdefs.ErrNotFound
}

func (f *fakeDocker) VolumeList(_ context.Context, o mobyclient.VolumeListOptions) (mobyclient.VolumeListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out mobyclient.VolumeListResult
next:
	for name, labels := range f.volumes {
		for kv := range o.Filters["label"] {
			k, v, _ := strings.Cut(kv, "=")
			if labels[k] != v {
				continue next
			}
		}
		out.Items = append(out.Items, volume.Volume{Name: name, Labels: labels})
	}
	return out, nil
}

func (f *fakeDocker) VolumeRemove(_ context.Context, name string, _ mobyclient.VolumeRemoveOptions) (mobyclient.VolumeRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.volumes[name]; !ok {
		return mobyclient.VolumeRemoveResult{}, cerrdefs.ErrNotFound
	}
	f.record("volume-remove", name)
	delete(f.volumes, name)
	return mobyclient.VolumeRemoveResult{}, nil
}

// frame writes data as one stdcopy frame of stream (1 stdout, 2 stderr).
func frame(buf *bytes.Buffer, stream byte, data string) {
	if data == "" {
		return
	}
	hdr := [8]byte{stream}
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(data)))
	buf.Write(hdr[:])
	buf.WriteString(data)
}

func (f *fakeDocker) NetworkDisconnect(context.Context, string, mobyclient.NetworkDisconnectOptions) (mobyclient.NetworkDisconnectResult, error) {
	return mobyclient.NetworkDisconnectResult{}, cerrdefs.ErrNotFound
}

func (f *fakeDocker) ContainerCreate(_ context.Context, o mobyclient.ContainerCreateOptions) (mobyclient.ContainerCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.find(o.Name) != nil {
		return mobyclient.ContainerCreateResult{}, cerrdefs.ErrConflict
	}
	f.nextID++
	c := &fakeCtr{id: fmt.Sprintf("%064x", f.nextID), name: o.Name, labels: o.Config.Labels, state: container.StateCreated,
		image: o.Config.Image, env: o.Config.Env, cmd: o.Config.Cmd, nets: o.NetworkingConfig}
	if o.HostConfig != nil {
		c.hc = *o.HostConfig
	}
	f.containers = append(f.containers, c)
	f.record("create", o.Name)
	return mobyclient.ContainerCreateResult{ID: c.id}, nil
}

func (f *fakeDocker) CopyToContainer(_ context.Context, id string, o mobyclient.CopyToContainerOptions) (mobyclient.CopyToContainerResult, error) {
	data, err := io.ReadAll(o.Content)
	if err != nil {
		return mobyclient.CopyToContainerResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(id)
	if c == nil {
		return mobyclient.CopyToContainerResult{}, cerrdefs.ErrNotFound
	}
	c.copied = append(c.copied, data)
	return mobyclient.CopyToContainerResult{}, nil
}

// ImageInspect answers from images, decoded as the engine's JSON (which
// spares naming the image-spec config type).
func (f *fakeDocker) ImageInspect(_ context.Context, ref string, _ ...mobyclient.ImageInspectOption) (mobyclient.ImageInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var r mobyclient.ImageInspectResult
	js, ok := f.images[ref]
	if !ok {
		return r, cerrdefs.ErrNotFound
	}
	err := json.Unmarshal([]byte(js), &r)
	return r, err
}

func (f *fakeDocker) ImageList(context.Context, mobyclient.ImageListOptions) (mobyclient.ImageListResult, error) {
	return mobyclient.ImageListResult{}, nil
}

func (f *fakeDocker) NetworkCreate(_ context.Context, name string, _ mobyclient.NetworkCreateOptions) (mobyclient.NetworkCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("network-create", name)
	return mobyclient.NetworkCreateResult{ID: name}, nil
}

func (f *fakeDocker) VolumeInspect(_ context.Context, name string, _ mobyclient.VolumeInspectOptions) (mobyclient.VolumeInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.volumes[name]; !ok {
		return mobyclient.VolumeInspectResult{}, cerrdefs.ErrNotFound
	}
	return mobyclient.VolumeInspectResult{}, nil
}

func (f *fakeDocker) VolumeCreate(_ context.Context, o mobyclient.VolumeCreateOptions) (mobyclient.VolumeCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.volumes == nil {
		f.volumes = map[string]map[string]string{}
	}
	f.volumes[o.Name] = o.Labels
	f.record("volume-create", o.Name)
	return mobyclient.VolumeCreateResult{}, nil
}

// Info reports a plain Linux engine (cp up asks whether it is Docker Desktop).
func (f *fakeDocker) Info(context.Context, mobyclient.InfoOptions) (mobyclient.SystemInfoResult, error) {
	var r mobyclient.SystemInfoResult
	r.Info.OperatingSystem = "Debian GNU/Linux 13 (trixie)"
	return r, nil
}
