package admin

import (
	"testing"
	"time"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/internal/consts"
)

// TestEventIdentityFromLabelsIsValidated: a Docker event's labels are set
// by whoever made the container; an escape sequence in them must not be
// published as the event's agent or project.
func TestEventIdentityFromLabelsIsValidated(t *testing.T) {
	ev := ToProto(dockerevents.DockerEvent{Action: "start", ContainerID: "c1", At: time.Now(), Labels: map[string]string{
		consts.LabelAgent: "x\x1b]52;c;cHduZWQ=\x07", consts.LabelProject: "web"}})
	if ev.GetAgent() != "" || ev.GetProject() != "web" {
		t.Fatalf("agent %q project %q: an invalid label was published", ev.GetAgent(), ev.GetProject())
	}
}
