package egress

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"
)

// fakeDocker is the Docker API's container list.
type fakeDocker struct {
	ids   []string
	err   error
	calls atomic.Int32
}

func (f *fakeDocker) ContainerList(_ context.Context, o mobyclient.ContainerListOptions) (mobyclient.ContainerListResult, error) {
	f.calls.Add(1)
	if !o.All {
		return mobyclient.ContainerListResult{}, errors.New("stopped containers must be listed too")
	}
	var res mobyclient.ContainerListResult
	for _, id := range f.ids {
		res.Items = append(res.Items, container.Summary{ID: id})
	}
	return res, f.err
}

// blockThenRestart blocks ids in a fresh state file, then starts a new
// Service on it with docker as its container lister.
func blockThenRestart(t *testing.T, docker ContainerLister, ids ...string) (*fixture, string) {
	t.Helper()
	db := filepath.Join(t.TempDir(), "egress.db")
	f := newFixtureWith(t, "", db)
	for _, id := range ids {
		if err := f.svc.Block(context.Background(), id, true); err != nil {
			t.Fatal(err)
		}
	}
	f.svc.Close()
	return newFixtureCfg(t, func(c *Config) { c.StateDB, c.Containers = db, docker }), db
}

// Blocks of containers destroyed while the CP was down are pruned at
// start, in memory and in the file; those of existing containers (stopped
// ones too, listed with All) stay, and a short ID is never taken for gone.
func TestBlocksOfDestroyedContainersPrunedAtStart(t *testing.T) {
	live, short := "aaaa000000000000000000000000000000000000000000000000000000000001", "bbbb0000"
	docker := &fakeDocker{ids: []string{live, short + "00000000000000000000000000000000000000000000000000000002"}}
	gone := "cccc000000000000000000000000000000000000000000000000000000000003"
	f, db := blockThenRestart(t, docker, live, short, gone)
	if docker.calls.Load() != 1 {
		t.Fatalf("container list calls %d", docker.calls.Load())
	}
	if !f.svc.Blocked(live) || !f.svc.Blocked(short) || f.svc.Blocked(gone) {
		t.Fatalf("after prune: live %v short %v gone %v", f.svc.Blocked(live), f.svc.Blocked(short), f.svc.Blocked(gone))
	}
	f.svc.Close()
	// The row is gone from the file: a CP with no Docker view restores
	// only the other two.
	g := newFixtureWith(t, "", db)
	if !g.svc.Blocked(live) || !g.svc.Blocked(short) || g.svc.Blocked(gone) {
		t.Fatalf("rows after prune: live %v short %v gone %v", g.svc.Blocked(live), g.svc.Blocked(short), g.svc.Blocked(gone))
	}
}

// A failed listing lifts nothing.
func TestPruneAtStartKeepsBlocksWhenDockerFails(t *testing.T) {
	f, _ := blockThenRestart(t, &fakeDocker{err: errors.New("docker down")}, "c1", "c2")
	if !f.svc.Blocked("c1") || !f.svc.Blocked("c2") {
		t.Fatal("a Docker error lifted blocks")
	}
}

// Forget (a destroy event) removes the block for good; an unblocked or
// unknown container is a no-op, and other blocks stay.
func TestForgetDestroyedContainer(t *testing.T) {
	db := filepath.Join(t.TempDir(), "egress.db")
	f := newFixtureWith(t, "", db)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2"} {
		if err := f.svc.Block(ctx, id, true); err != nil {
			t.Fatal(err)
		}
	}
	f.svc.Forget(ctx, "c1")
	f.svc.Forget(ctx, "never-blocked")
	if f.svc.Blocked("c1") || !f.svc.Blocked("c2") {
		t.Fatalf("after forget: c1 %v c2 %v", f.svc.Blocked("c1"), f.svc.Blocked("c2"))
	}
	f.svc.Close()
	g := newFixtureWith(t, "", db)
	if g.svc.Blocked("c1") || !g.svc.Blocked("c2") {
		t.Fatalf("after restart: c1 %v c2 %v", g.svc.Blocked("c1"), g.svc.Blocked("c2"))
	}
}
