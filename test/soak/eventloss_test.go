package soak

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mobyclient "github.com/moby/moby/client"
)

// TestDockerEventStreamLoss puts a socket proxy between the CP and the
// engine, then cuts every CP connection (the events stream included) and
// refuses new ones while the test destroys one agent and starts another on
// the engine directly. When the proxy comes back the CP must have caught up:
// the destroyed agent's row evicted (no destroy missed), the new agent
// dialed, registered and initialised (no start missed), the untouched agent
// still connected.
func TestDockerEventStreamLoss(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	upstream := "/var/run/docker.sock"
	if u, err := url.Parse(suite.docker.DaemonHost()); err == nil && u.Scheme == "unix" {
		upstream = u.Path
	}
	sock := filepath.Join(t.TempDir(), "docker.sock")
	p, err := newSockProxy(sock, upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)

	e.must("init")
	// cp up mounts the socket its own Docker client uses: point it at the
	// proxy for this one invocation.
	cpUp := *e
	cpUp.Env = []string{"DOCKER_HOST=unix://" + sock}
	cpUp.must("cp", "up", "--wait", "90s")
	eventually(t, time.Minute, "the CP's events stream goes through the proxy", func() error {
		if p.events.Load() == 0 {
			return fmt.Errorf("no /events request seen")
		}
		return nil
	})

	doomed, err := e.run("loss", "doomed", "sleep", "3600")
	if err != nil {
		t.Fatal(err)
	}
	steady, err := e.run("loss", "steady", "sleep", "3600")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "both agents registered and connected", func() error {
		live, err := liveAgents(ctx)
		if err != nil {
			return err
		}
		rows, err := e.agentsErr()
		if err != nil {
			return err
		}
		if len(live) != 2 {
			return fmt.Errorf("%d live", len(live))
		}
		return checkRegistryMatchesLive(rows, live)
	})
	before, err := e.metrics()
	if err != nil {
		t.Fatal(err)
	}

	// Outage: the CP loses the engine.
	p.setDown(true)
	p.cutAll()
	outageStart := time.Now()
	refusedAtCut := p.refused.Load()
	eventually(t, time.Minute, "the CP tries to reconnect and is refused", func() error {
		if p.refused.Load() == refusedAtCut {
			return fmt.Errorf("no reconnect attempt yet")
		}
		return nil
	})
	if _, err := suite.docker.ContainerRemove(ctx, doomed, mobyclient.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
		t.Fatal(err)
	}
	born, err := e.run("loss", "born", "sleep", "3600")
	if err != nil {
		t.Fatal(err)
	}
	// Stay down until the CP has failed at least once more after the
	// changes, so they fall squarely inside the outage.
	refusedAfter := p.refused.Load()
	eventually(t, time.Minute, "another refused reconnect", func() error {
		if p.refused.Load() == refusedAfter {
			return fmt.Errorf("no reconnect attempt yet")
		}
		return nil
	})
	p.setDown(false)
	outage := time.Since(outageStart)

	eventually(t, 2*time.Minute, "CP caught up: destroy evicted, start dialed and registered", func() error {
		live, err := liveAgents(ctx)
		if err != nil {
			return err
		}
		rows, err := e.agentsErr()
		if err != nil {
			return err
		}
		if err := checkRegistryMatchesLive(rows, live); err != nil {
			return err
		}
		for _, r := range rows {
			if r.ContainerID == doomed {
				return fmt.Errorf("destroyed agent still listed: %+v", r)
			}
		}
		if !live[born] || !live[steady] || len(live) != 2 {
			return fmt.Errorf("live set: %v", live)
		}
		return nil
	})
	after, err := e.metrics()
	if err != nil {
		t.Fatal(err)
	}
	reconnects := after["clawker_cp_docker_event_reconnects_total"] - before["clawker_cp_docker_event_reconnects_total"]
	if reconnects < 1 {
		t.Errorf("docker event reconnects went %v → %v: the cut was not seen", before["clawker_cp_docker_event_reconnects_total"], after["clawker_cp_docker_event_reconnects_total"])
	}
	var regs float64
	for k, v := range after {
		if strings.HasPrefix(k, `clawker_cp_registrations_total{outcome="ok"`) {
			regs += v
		}
	}
	t.Logf("event stream loss: outage %s, %d connections cut, %d reconnects refused, %.0f event-stream reconnects; destroy seen, start seen (%.0f registrations in all)",
		outage.Round(time.Millisecond), p.cut.Load()/2, p.refused.Load(), reconnects, regs)
}
