package agent

import (
	"context"
	"errors"
	"reflect"
	"testing"

	clawkerdv1 "github.com/clawker/clawker/api/clawkerd/v1"
	"github.com/clawker/clawker/controlplane/overseer"
)

// observing reports whether id's Session is up and kept for observation
// only: Exec refuses it with ErrSessionUntrusted (and nothing is sent).
func observing(env *dtEnv, id string) bool {
	_, err := env.dialer.Exec(context.Background(), id, &clawkerdv1.ShellCommand{
		Stages: []*clawkerdv1.PipeStage{{Argv: []string{"touch", "/tmp/pwned"}}}})
	return errors.Is(err, ErrSessionUntrusted)
}

// The container-URN pin: a real agent cert, chained to the clawker CA and
// naming the same agent as the labels, but minted for container A, is
// served at container B's address. The Dialer marks B untrusted with
// container_mismatch and keeps the Session for observation only: no
// RegisterRequired, no init step, no AgentReady, no Exec. (Before the pin
// the same peer got Register and the whole init plan.)
func TestDialPinsTheContainerURN(t *testing.T) {
	env := newDTEnv(t, nil)
	idA, idB := dtContainerID(t), dtContainerID(t)
	f := startFake(t, env.pki, &fakeClawkerd{registerOK: true}, env.pki.agentLeaf(t, "proj", "dev", idA))
	env.targets.set(idB, DialTarget{Address: f.addr, AgentName: "dev", Project: "proj"})
	env.dialer.DialAgent(context.Background(), idB)

	dtWait(t, "observation-only session", func() bool { return observing(env, idB) })
	// The recorder is a bus subscriber: let it catch up with the finding.
	dtWait(t, "finding recorded", func() bool { return len(untrustedReasons(env, idB)) > 0 })
	if got := untrustedReasons(env, idB); !reflect.DeepEqual(got, []overseer.UntrustedReason{overseer.ReasonContainerMismatch}) {
		t.Fatalf("reasons %v, want only container_mismatch", got)
	}
	if got := f.seen(); !reflect.DeepEqual(got, []string{"hello"}) {
		t.Fatalf("the peer holding another container's cert was sent %v, want only the hello", got)
	}
	for _, n := range []string{EventAgentRegistered, EventInitStarted, EventInitCompleted} {
		if env.rec.has(idB, n) {
			t.Fatalf("%s published for an unpinned Session: %v", n, env.rec.names(idB))
		}
	}
	a, ok := env.bus.Agent(idB)
	if !ok || a.Session != overseer.SessionStatusConnected || a.Trusted || a.Registered || a.Init == overseer.InitStatusCompleted {
		t.Fatalf("worldview = %+v", a)
	}
	if s := env.dialer.Sessions(); len(s) != 1 || s[0].Ready {
		t.Fatalf("sessions %+v: an observation Session must not report Ready", s)
	}

	// The Session is still observed: its end is reported as usual.
	env.dialer.CancelDial(idB)
	env.rec.wait(t, idB, EventSessionClosed)
	if got := f.seen(); !reflect.DeepEqual(got, []string{"hello"}) {
		t.Fatalf("after teardown the peer had been sent %v", got)
	}
}
