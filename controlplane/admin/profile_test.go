package admin

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/testenv/testpki"
)

// fetchProfile runs the Profile RPC to the end and returns the bytes.
func fetchProfile(ctx context.Context, c adminv1.AdminServiceClient, req *adminv1.ProfileRequest) ([]byte, error) {
	stream, err := c.Profile(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, chunk.GetData()...)
	}
}

// profileStrings checks data is what `go tool pprof` reads — a gzipped
// profile.proto — and returns its string table (field 6).
func profileStrings(t *testing.T, data []byte) []string {
	t.Helper()
	if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
		t.Fatalf("profile does not start with the gzip magic: % x", data[:min(len(data), 8)])
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	var strs []string
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("not a protobuf: %v", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 6 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				t.Fatalf("string table: %v", protowire.ParseError(m))
			}
			strs = append(strs, string(v))
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			t.Fatalf("field %d: %v", num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return strs
}

func TestProfileRoundTripsRealProfiles(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, p, newServer(t, &fakeRegistry{}, overseer.New(nil), nil, nil))
	c := dial(t, addr, p, p.cli)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The sample types name each kind: cpu profiles count samples and
	// nanoseconds, heap ones in-use space, goroutine ones goroutines.
	for kind, want := range map[adminv1.ProfileKind]string{
		adminv1.ProfileKind_PROFILE_KIND_CPU:       "nanoseconds",
		adminv1.ProfileKind_PROFILE_KIND_HEAP:      "inuse_space",
		adminv1.ProfileKind_PROFILE_KIND_GOROUTINE: "goroutine",
		adminv1.ProfileKind_PROFILE_KIND_ALLOCS:    "alloc_space",
		adminv1.ProfileKind_PROFILE_KIND_MUTEX:     "contentions",
		adminv1.ProfileKind_PROFILE_KIND_BLOCK:     "contentions",
	} {
		req := &adminv1.ProfileRequest{Kind: kind}
		if windowed(kind) {
			req.Seconds = 1
		}
		data, err := fetchProfile(ctx, c, req)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if strs := profileStrings(t, data); !slices.Contains(strs, want) {
			t.Errorf("%s profile lacks %q in its string table: %q", kind, want, strs)
		}
	}
}

func TestProfileRefusesNonOperators(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, p, newServer(t, &fakeRegistry{}, overseer.New(nil), nil, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	agentLeaf, err := p.ca.MintAgent(auth.ProjectSlug{}, mustName(t, "a"), idA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req := &adminv1.ProfileRequest{Kind: adminv1.ProfileKind_PROFILE_KIND_HEAP}
	for name, c := range map[string]adminv1.AdminServiceClient{
		"agent cert":   dial(t, addr, p, testpki.TLSCert(agentLeaf)),
		"cp cert":      dial(t, addr, p, p.cp),
		"foreign cert": dial(t, addr, p, newPKI(t).cli),
	} {
		data, err := fetchProfile(ctx, c, req)
		if err == nil || len(data) > 0 {
			t.Errorf("%s got a profile (%d bytes, err %v)", name, len(data), err)
		}
	}
}

func TestProfileRejectsBadInput(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, p, newServer(t, &fakeRegistry{}, overseer.New(nil), nil, nil))
	c := dial(t, addr, p, p.cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, req := range map[string]*adminv1.ProfileRequest{
		"no kind":          {},
		"unknown kind":     {Kind: 99},
		"cpu no seconds":   {Kind: adminv1.ProfileKind_PROFILE_KIND_CPU},
		"cpu too long":     {Kind: adminv1.ProfileKind_PROFILE_KIND_CPU, Seconds: maxProfileSeconds + 1},
		"block no seconds": {Kind: adminv1.ProfileKind_PROFILE_KIND_BLOCK},
		"heap with window": {Kind: adminv1.ProfileKind_PROFILE_KIND_HEAP, Seconds: 5},
	} {
		if _, err := fetchProfile(ctx, c, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: want InvalidArgument, got %v", name, err)
		}
	}
}

func TestProfileOneWindowAtATime(t *testing.T) {
	p := newPKI(t)
	s := newServer(t, &fakeRegistry{}, overseer.New(nil), nil, nil)
	addr := serve(t, p, s)
	c := dial(t, addr, p, p.cli)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !s.prof.acquire() { // a window in progress
		t.Fatal("slot taken on a fresh server")
	}
	for _, kind := range []adminv1.ProfileKind{adminv1.ProfileKind_PROFILE_KIND_CPU, adminv1.ProfileKind_PROFILE_KIND_MUTEX} {
		_, err := fetchProfile(ctx, c, &adminv1.ProfileRequest{Kind: kind, Seconds: 1})
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "another") {
			t.Fatalf("%s while busy: %v", kind, err)
		}
	}
	// Point-in-time kinds do not need the slot.
	if _, err := fetchProfile(ctx, c, &adminv1.ProfileRequest{Kind: adminv1.ProfileKind_PROFILE_KIND_GOROUTINE}); err != nil {
		t.Fatalf("goroutine profile while a window runs: %v", err)
	}
	s.prof.release()
	if _, err := fetchProfile(ctx, c, &adminv1.ProfileRequest{Kind: adminv1.ProfileKind_PROFILE_KIND_CPU, Seconds: 1}); err != nil {
		t.Fatalf("cpu profile after the window ended: %v", err)
	}
}

func TestProfileEndsWhenTheClientGoesAway(t *testing.T) {
	p := newPKI(t)
	s := newServer(t, &fakeRegistry{}, overseer.New(nil), nil, nil)
	addr := serve(t, p, s)
	c := dial(t, addr, p, p.cli)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Profile(ctx, &adminv1.ProfileRequest{Kind: adminv1.ProfileKind_PROFILE_KIND_CPU, Seconds: maxProfileSeconds})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the server holds the slot, then walk away.
	waitUntil(t, 10*time.Second, "the profile never started", s.prof.running)
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("recv after cancel: %v", err)
	}
	// The 120 s window is abandoned at once: the slot frees and the CPU
	// profiler can start again.
	waitUntil(t, 10*time.Second, "the cpu window outlived its client", func() bool { return !s.prof.running() })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if _, err := fetchProfile(ctx2, c, &adminv1.ProfileRequest{Kind: adminv1.ProfileKind_PROFILE_KIND_CPU, Seconds: 1}); err != nil {
		t.Fatalf("cpu profile after a cancelled one: %v", err)
	}
}
