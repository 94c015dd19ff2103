package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
)

// showProgress prints the agent's lifecycle as the CP reports it (Session,
// registration, each init step) to w until init completes or fails, or ctx
// ends. A CP that cannot be reached only costs a warning: the console
// stream goes on without progress.
func (a *app) showProgress(ctx context.Context, w io.Writer, project, agent, containerID string) {
	ac, err := a.admin(ctx)
	if err != nil {
		fmt.Fprintf(w, "clawker: no init progress (%s)\n", termSafe(err.Error()))
		return
	}
	defer ac.Close()
	stream, err := ac.WatchEvents(ctx, &adminv1.WatchEventsRequest{Agent: agent, Project: project,
		SinceUnixNano: a.now().Add(-time.Minute).UnixNano()})
	if err != nil {
		fmt.Fprintf(w, "clawker: no init progress (%s)\n", termSafe(rpcError("watch", err).Error())) // the CP's text may quote agent data
		return
	}
	for {
		res, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(w, "clawker: progress stream ended: %s\n", termSafe(rpcError("watch", err).Error()))
			}
			return
		}
		ev := res.GetEvent()
		if ev == nil || ev.GetContainerId() != containerID {
			continue
		}
		if line, done := progressLine(ev); line != "" {
			fmt.Fprintf(w, "clawker: %s\n", termSafe(line)) // fields are agent-controlled
			if done {
				return
			}
		}
	}
}

// progressLine renders one event; done reports a terminal init event.
func progressLine(ev *adminv1.Event) (line string, done bool) {
	f := ev.GetFields()
	step := func() string {
		// StepIndex is 1-based ("step i of N").
		i, n := f["StepIndex"], f["StepCount"]
		if n == "" || n == "0" {
			return f["StepName"]
		}
		return fmt.Sprintf("[%s/%s] %s", i, n, f["StepName"])
	}
	switch ev.GetName() {
	case "session_connected":
		return "session connected", false
	case "session_failed":
		return "session failed: " + f["Reason"], false
	case "agent_registered":
		if f["Ok"] == "true" {
			return "registered", false
		}
		return "registration failed: " + f["Reason"], false
	case "agent_untrusted":
		return "UNTRUSTED: " + f["Reason"] + " " + f["Detail"], false
	case "init_step_started":
		return "init " + step() + " ...", false
	case "init_step_completed":
		return "init " + step() + " ok (" + f["Duration"] + ")", false
	case "init_step_failed":
		return "init " + step() + " FAILED: " + f["Reason"] + " " + f["Detail"], false
	case "init_completed":
		return "agent ready (init " + f["Duration"] + ")", true
	case "init_failed":
		return "init FAILED at " + f["FailedStep"] + ": " + f["Reason"] + " " + f["Detail"], true
	}
	return "", false
}
