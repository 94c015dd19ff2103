package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	mobyclient "github.com/moby/moby/client"
)

// pullFake has image present only after a successful pull.
type pullFake struct {
	runDocker
	present bool
	pulls   int
	pullErr error                // ImagePull's own error
	msgs    []jsonstream.Message // the pull's progress stream
}

func (p *pullFake) ImageInspect(context.Context, string, ...mobyclient.ImageInspectOption) (mobyclient.ImageInspectResult, error) {
	if !p.present {
		return mobyclient.ImageInspectResult{}, cerrdefs.ErrNotFound
	}
	var r mobyclient.ImageInspectResult
	r.ID = "sha256:abc"
	return r, nil
}

func (p *pullFake) ImagePull(context.Context, string, mobyclient.ImagePullOptions) (mobyclient.ImagePullResponse, error) {
	p.pulls++
	if p.pullErr != nil {
		return nil, p.pullErr
	}
	ok := true
	for _, m := range p.msgs {
		ok = ok && m.Error == nil
	}
	p.present = ok
	return pullStream{msgs: p.msgs}, nil
}

type pullStream struct {
	io.ReadCloser
	msgs []jsonstream.Message
}

func (s pullStream) Close() error { return nil }

func (s pullStream) JSONMessages(context.Context) iter.Seq2[jsonstream.Message, error] {
	return func(yield func(jsonstream.Message, error) bool) {
		for _, m := range s.msgs {
			if !yield(m, nil) {
				return
			}
		}
	}
}

func (s pullStream) Wait(context.Context) error { return nil }

func TestImageForRunPullPolicies(t *testing.T) {
	progress := []jsonstream.Message{{Status: "Pulling from library/busybox", ID: "latest"},
		{Status: "Downloading", ID: "l1"}, {Status: "Downloading", ID: "l1"}, {Status: "Pull complete", ID: "l1"}}
	for _, tc := range []struct {
		name    string
		f       *pullFake
		policy  string
		code    int // exitCode of the error; 0 = success
		pulls   int
		errHas  string
		wantOut []string // stderr lines, in order
	}{
		{"present", &pullFake{present: true}, pullMissing, 0, 0, "", nil},
		{"missing is pulled with progress", &pullFake{msgs: progress}, pullMissing, 0, 1, "",
			[]string{"Unable to find image 'img' locally", "latest: Pulling from library/busybox", "l1: Downloading", "l1: Pull complete"}},
		{"no registry", &pullFake{pullErr: errors.New("dial tcp: lookup registry-1.docker.io: no such host")}, pullMissing, ExitNotFound, 1,
			"no such host (is a registry reachable?", []string{"Unable to find image 'img' locally"}},
		{"error in the stream", &pullFake{msgs: []jsonstream.Message{{Error: &jsonstream.Error{Message: "manifest unknown"}}}}, pullMissing, ExitNotFound, 1,
			"manifest unknown", nil},
		{"never", &pullFake{}, pullNever, ExitNotFound, 0, "--pull never", nil},
		{"always pulls a present image", &pullFake{present: true, msgs: progress[:1]}, pullAlways, 0, 1, "", []string{"latest: Pulling from library/busybox"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errb bytes.Buffer
			a := &app{errOut: &errb}
			_, err := a.imageForRun(context.Background(), tc.f, "img", tc.policy)
			if exitCode(err) != tc.code || (tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas)) {
				t.Fatalf("err %v (exit %d), want exit %d with %q", err, exitCode(err), tc.code, tc.errHas)
			}
			if tc.f.pulls != tc.pulls {
				t.Errorf("%d pulls, want %d", tc.f.pulls, tc.pulls)
			}
			if got := strings.Split(strings.TrimSpace(errb.String()), "\n"); tc.wantOut != nil && !slices.Equal(got, tc.wantOut) {
				t.Errorf("progress %q, want %q", got, tc.wantOut)
			}
		})
	}
}

func TestUserCommand(t *testing.T) {
	str := func(s string) *string { return &s }
	imgEP, imgCmd := []string{"/ep.sh"}, []string{"serve"}
	for _, tc := range []struct {
		name string
		ep   *string
		cmd  []string
		want []string
	}{
		{"image default", nil, nil, []string{"/ep.sh", "serve"}},
		{"cmd replaces both", nil, []string{"sh", "-c", "x"}, []string{"sh", "-c", "x"}},
		{"--entrypoint drops the image CMD", str("/bin/sh"), nil, []string{"/bin/sh"}},
		{"--entrypoint with args", str("/bin/sh"), []string{"-c", "id"}, []string{"/bin/sh", "-c", "id"}},
		{"--entrypoint '' clears it", str(""), []string{"top"}, []string{"top"}},
	} {
		if got := userCommand(tc.ep, tc.cmd, imgEP, imgCmd); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRunDockerSpellings(t *testing.T) {
	home := initHome(t)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "--name", "a", "--agent", "b", "busybox"}, "disagree"},
		{[]string{"run", "--name", "Bad!", "busybox"}, "invalid --agent"},
		{[]string{"run", "--name", "a", "--pull", "sometimes", "busybox"}, "--pull must be"},
	} {
		h := &harness{home: home}
		if _, stderr, code := h.run(t, tc.args...); code != ExitUsage || !strings.Contains(stderr, tc.msg) || h.dockerCalls != 0 {
			t.Errorf("%v: exit %d, %d Docker calls, stderr %q", tc.args, code, h.dockerCalls, stderr)
		}
	}
}
