package cli

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/config"
	"github.com/clawker/clawker/internal/consts"
)

// State volumes keep named paths of an agent across rm and run: one named
// volume per project, agent and path, found again by its labels.
const (
	purposeState   = "state"
	labelStatePath = "dev.clawker.state.path"
	purposeProbe   = "probe"
)

// agentUser is CLAWKER_USER resolved against the image's /etc/passwd.
type agentUser struct {
	uid, gid int
	home     string
}

// unsafeVolChars is compiled on first use, not at every CLI start.
var unsafeVolChars = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[^A-Za-z0-9_.-]+`) })

// stateVolumeName is deterministic, so a later run of the same agent
// mounts the same volume.
func stateVolumeName(project, agent, statePath string) string {
	p := project
	if p == "" {
		p = "_"
	}
	slug := strings.Trim(unsafeVolChars().ReplaceAllString(strings.ReplaceAll(statePath, "~", "home"), "_"), "_.-")
	return "clawker-state." + p + "." + agent + "." + slug
}

// stateTarget resolves ~/ against the agent user's home.
func stateTarget(p string, u agentUser) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return path.Join(u.home, rest)
	}
	return path.Clean(p)
}

// stateMounts returns the volume mounts for the state paths. Docker
// creates a missing named volume on first mount and copies the image's
// content at the target into it, so a state dir starts from the image.
func stateMounts(project, agent string, paths []string, u agentUser) ([]mount.Mount, error) {
	var out []mount.Mount
	seen := map[string]bool{}
	for _, p := range paths {
		target := stateTarget(p, u)
		if r := reservedMount(target); r != "" {
			return nil, usageErrorf("state path %s would cover %s, which clawker owns", p, r)
		}
		if seen[target] {
			continue
		}
		seen[target] = true
		labels := managedLabels(map[string]string{consts.LabelPurpose: purposeState, consts.LabelAgent: agent, labelStatePath: p})
		if project != "" {
			labels[consts.LabelProject] = project
		}
		out = append(out, mount.Mount{Type: mount.TypeVolume, Source: stateVolumeName(project, agent, p), Target: target,
			VolumeOptions: &mount.VolumeOptions{Labels: labels}})
	}
	return out, nil
}

// stateOwnerTar hands each state mount's root to the agent user (a new
// volume's root is root-owned). Copied before start, when the mounts are
// in place; without CopyUIDGID the engine keeps the headers' uid/gid
// (CopyUIDGID would chown everything to the container's User, root).
func stateOwnerTar(mounts []mount.Mount, u agentUser) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range mounts {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(m.Target, "/") + "/",
			Mode: 0o700, Uid: u.uid, Gid: u.gid}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// resolveAgentUser finds runAs's uid, gid and home in the image's
// /etc/passwd, read from a never-started probe container. Called only
// when state paths need the home.
func resolveAgentUser(ctx context.Context, c probeDocker, image, runAs string) (agentUser, error) {
	name, grp, _ := strings.Cut(runAs, ":")
	if name == "" || name == "root" || name == "0" {
		u := agentUser{home: "/root"}
		u.gid, _ = strconv.Atoi(grp)
		return u, nil
	}
	created, err := c.ContainerCreate(ctx, mobyclient.ContainerCreateOptions{
		Config: &container.Config{Image: image, Entrypoint: []string{"/nonexistent"},
			Labels: managedLabels(map[string]string{consts.LabelPurpose: purposeProbe})},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
	})
	if err != nil {
		return agentUser{}, fmt.Errorf("create a probe container to read %s's /etc/passwd: %w", image, err)
	}
	defer func() {
		_, _ = c.ContainerRemove(context.WithoutCancel(ctx), created.ID, mobyclient.ContainerRemoveOptions{Force: true})
	}()
	var passwd []byte
	res, err := c.CopyFromContainer(ctx, created.ID, mobyclient.CopyFromContainerOptions{SourcePath: "/etc/passwd"})
	switch {
	case err == nil:
		defer res.Content.Close()
		tr := tar.NewReader(res.Content)
		if _, err := tr.Next(); err == nil {
			passwd, _ = io.ReadAll(io.LimitReader(tr, 1<<20))
		}
	case !cerrdefs.IsNotFound(err):
		return agentUser{}, fmt.Errorf("read /etc/passwd of %s: %w", image, err)
	}
	return lookupPasswd(passwd, name, grp)
}

// lookupPasswd resolves a name or numeric uid (with optional group) the
// way the init plan's probe does: an unknown numeric uid has home /.
func lookupPasswd(passwd []byte, name, grp string) (agentUser, error) {
	uidWanted, numErr := strconv.Atoi(name)
	sc := bufio.NewScanner(bytes.NewReader(passwd))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 7 {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		if f[0] == name || (numErr == nil && uid == uidWanted) {
			u := agentUser{uid: uid, gid: gid, home: f[5]}
			if g, err := strconv.Atoi(grp); err == nil {
				u.gid = g
			}
			if u.home == "" {
				u.home = "/"
			}
			return u, nil
		}
	}
	if numErr == nil {
		g, err := strconv.Atoi(grp)
		if err != nil {
			g = uidWanted
		}
		return agentUser{uid: uidWanted, gid: g, home: "/"}, nil
	}
	return agentUser{}, errors.New("user " + name + " is not in the image's /etc/passwd: state paths under ~/ need its home")
}

// listStateVolumes returns the state volumes, optionally of one agent.
func listStateVolumes(ctx context.Context, c volumeListRemover, project, agent string, anyProject bool) ([]stateVolume, error) {
	f := make(mobyclient.Filters).Add("label", consts.LabelPurpose+"="+purposeState)
	if agent != "" {
		f = f.Add("label", consts.LabelAgent+"="+agent)
	}
	res, err := c.VolumeList(ctx, mobyclient.VolumeListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list state volumes: %w", err)
	}
	var out []stateVolume
	for _, v := range res.Items {
		if !anyProject && v.Labels[consts.LabelProject] != project {
			continue
		}
		out = append(out, stateVolume{Name: v.Name, Project: v.Labels[consts.LabelProject],
			Agent: v.Labels[consts.LabelAgent], Path: v.Labels[labelStatePath]})
	}
	return out, nil
}

type stateVolume struct {
	Name    string `json:"volume"`
	Project string `json:"project"`
	Agent   string `json:"agent"`
	Path    string `json:"path"`
}

// removeStateVolumes removes vols; a volume still mounted by a container
// is reported, not forced.
func removeStateVolumes(ctx context.Context, c volumeListRemover, vols []stateVolume) error {
	var errs []error
	for _, v := range vols {
		if _, err := c.VolumeRemove(ctx, v.Name, mobyclient.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove state volume %s: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

// chownState copies stateOwnerTar into the created container; a no-op
// without state mounts.
func chownState(ctx context.Context, c containerCopier, id string, mounts []mount.Mount, u agentUser) error {
	if len(mounts) == 0 {
		return nil
	}
	data, err := stateOwnerTar(mounts, u)
	if err != nil {
		return err
	}
	if _, err := c.CopyToContainer(ctx, id, mobyclient.CopyToContainerOptions{DestinationPath: "/", Content: bytes.NewReader(data)}); err != nil {
		return fmt.Errorf("hand the state volumes to uid %d: %w", u.uid, err)
	}
	return nil
}

func valuesOf[T any](vs []config.Value[T]) []T {
	out := make([]T, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.V)
	}
	return out
}
