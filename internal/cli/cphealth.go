package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	mobyclient "github.com/moby/moby/client"

	"github.com/clawker/clawker/internal/consts"
)

// publishedAddr returns 127.0.0.1:<host port> of a CP container port.
func publishedAddr(ctx context.Context, c containerInspector, port int) (string, error) {
	res, err := c.ContainerInspect(ctx, consts.ControlPlaneContainer, mobyclient.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", withCode(ExitUnavailable, errors.New("the control plane is not running: run clawker cp up"))
		}
		return "", fmt.Errorf("inspect %s: %w", consts.ControlPlaneContainer, err)
	}
	if st := res.Container.State; st == nil || !st.Running {
		return "", withCode(ExitUnavailable, errors.New("the control plane container is not running: run clawker cp up (or clawker cp logs to see why it stopped)"))
	}
	// The ports are published on the holder of the CP's network namespace,
	// on loopback; a holder clawker did not make is not trusted to say.
	holder, err := c.ContainerInspect(ctx, consts.ControlPlaneNetContainer, mobyclient.ContainerInspectOptions{})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect %s: %w", consts.ControlPlaneNetContainer, err)
	}
	if ns := holder.Container.NetworkSettings; err == nil && ownCPNet(holder.Container) && ns != nil {
		p := network.MustParsePort(fmt.Sprintf("%d/tcp", port))
		for _, b := range ns.Ports[p] {
			if b.HostPort != "" && b.HostIP.IsLoopback() {
				return net.JoinHostPort(b.HostIP.String(), b.HostPort), nil
			}
		}
	}
	return "", withCode(ExitUnavailable, fmt.Errorf("control plane port %d is not published on 127.0.0.1 by %s: run clawker cp up", port, consts.ControlPlaneNetContainer))
}

// adminAddr asks Docker where the CP's admin port is published (dialCP
// has already tried the env override and the cached address).
func (a *app) adminAddr(ctx context.Context) (string, error) {
	c, err := a.docker(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return publishedAddr(ctx, c, consts.PortAdmin)
}

func healthAddr(ctx context.Context, c containerInspector) (string, error) {
	if v := os.Getenv(EnvCPHealthAddr); v != "" {
		return v, nil
	}
	return publishedAddr(ctx, c, consts.PortHealth)
}

// healthz is the JSON /healthz returns.
type healthz struct {
	Ready      bool              `json:"ready"`
	Subsystems map[string]string `json:"subsystems"`
	Version    string            `json:"version,omitempty"`
}

func getHealthz(ctx context.Context, addr string) (healthz, int, error) {
	var hz healthz
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return hz, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return hz, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return hz, resp.StatusCode, err
	}
	if err := json.Unmarshal(body, &hz); err != nil {
		return hz, resp.StatusCode, fmt.Errorf("decode /healthz: %w", err)
	}
	return hz, resp.StatusCode, nil
}

// waitReady polls /healthz until it answers 200 or wait elapses.
func (a *app) waitReady(ctx context.Context, c containerInspector, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	var last string
	for {
		addr, err := healthAddr(ctx, c)
		if err == nil {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			hz, code, herr := getHealthz(rctx, addr)
			cancel()
			if herr == nil && code == http.StatusOK && hz.Ready {
				fmt.Fprintf(a.out, "control plane ready (admin on %s)\n", a.describeAdmin(ctx, c))
				return nil
			}
			if herr != nil {
				last = herr.Error()
			} else {
				last = fmt.Sprintf("HTTP %d %v", code, hz.Subsystems)
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return withCode(ExitUnavailable, fmt.Errorf("control plane not ready after %s (%s): see clawker cp logs", wait, last))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (a *app) describeAdmin(ctx context.Context, c containerInspector) string {
	if v := os.Getenv(EnvCPAdminAddr); v != "" {
		return v
	}
	addr, err := publishedAddr(ctx, c, consts.PortAdmin)
	if err != nil {
		return "unknown"
	}
	return addr
}
