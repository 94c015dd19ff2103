package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/rs/zerolog"

	"github.com/clawker/clawker/controlplane/overseer"
)

// Event names are the wire vocabulary of WatchEvents and the log.
const (
	EventSessionConnecting = "session_connecting"
	EventSessionConnected  = "session_connected"
	EventSessionFailed     = "session_failed"
	EventSessionBroken     = "session_broken"
	EventSessionClosed     = "session_closed"
	EventAgentRegistered   = "agent_registered"
	EventAgentUntrusted    = "agent_untrusted"
	EventInitStarted       = "init_started"
	EventInitStepStarted   = "init_step_started"
	EventInitStepCompleted = "init_step_completed"
	EventInitStepFailed    = "init_step_failed"
	EventInitCompleted     = "init_completed"
	EventInitFailed        = "init_failed"
	EventReapDegraded      = "reap_degraded"
)

// stamp records identity labels and the update time on the worldview row,
// creating it. Only events that begin a Session (SessionConnecting,
// SessionConnected) create rows.
func stamp(s *overseer.State, sub overseer.Subject, at time.Time) (*overseer.AgentState, bool) {
	a := s.Agent(sub.ContainerID)
	if a == nil { // destroyed: a dial that raced the destroy
		return nil, false
	}
	return label(a, sub, at), true
}

// touch is stamp for every other event: it updates an existing row and
// reports false when there is none. `docker rm -f` emits destroy (which
// drops the row) and only then do the cancelled Session's SessionClosed,
// SessionBroken or InitFailed land; creating rows for them would leave a
// permanent ghost agent in the worldview.
func touch(s *overseer.State, sub overseer.Subject, at time.Time) (*overseer.AgentState, bool) {
	a, ok := s.Existing(sub.ContainerID)
	if !ok {
		return nil, false
	}
	return label(a, sub, at), true
}

func label(a *overseer.AgentState, sub overseer.Subject, at time.Time) *overseer.AgentState {
	if sub.AgentName != "" {
		a.AgentName = sub.AgentName
	}
	if sub.Project != "" {
		a.Project = sub.Project
	}
	a.UpdatedAt = at
	return a
}

// SessionConnecting fires when a dial attempt starts (first successful
// inspect of the container in a cycle).
type SessionConnecting struct {
	overseer.Subject
	Address string
	At      time.Time
}

func (e SessionConnecting) EventName() string     { return EventSessionConnecting }
func (e SessionConnecting) OccurredAt() time.Time { return e.At }
func (e SessionConnecting) ApplyTo(s *overseer.State) {
	a, ok := stamp(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Session = overseer.SessionStatusConnecting
	a.Address = e.Address
	// No Session, nothing vouches for the agent.
	a.Trusted = false
}
func (e SessionConnecting) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("address", e.Address)
}

// SessionConnected fires when a Session establishes (mTLS dial + Hello
// handshake completes). Identity fields are diagnostic, never a gate.
//
// Registered is an addition to the spec's field set: true when the
// registry already held a row with the live thumbprint (Match), so the
// worldview's Registered flag is right on reconnect without re-firing
// AgentRegistered.
//
// Trusted is an addition too: the dialer's positive verdict that this
// Session is a registry Match whose chain, CN and SANs assessed clean. It
// is false when the agent still has to Register (a successful
// AgentRegistered then establishes trust) and false by default, so an
// event built without it fails closed.
type SessionConnected struct {
	overseer.Subject
	Address           string
	Attempts          int
	PeerAgentFullName string
	PeerThumbprint    [sha256.Size]byte
	Registered        bool
	Trusted           bool
	At                time.Time
}

func (e SessionConnected) EventName() string     { return EventSessionConnected }
func (e SessionConnected) OccurredAt() time.Time { return e.At }
func (e SessionConnected) ApplyTo(s *overseer.State) {
	a, ok := stamp(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Session = overseer.SessionStatusConnected
	a.ConnectedAt = e.At
	a.Address = e.Address
	a.Attempts = e.Attempts
	a.PeerAgentFullName = e.PeerAgentFullName
	a.PeerThumbprint = e.PeerThumbprint
	a.Registered = e.Registered
	// Trust is re-derived per Session and only ever positively: the
	// previous Session's reasons no longer apply, and this Session's
	// AgentUntrusted events (which follow) clear Trusted again.
	a.Trusted = e.Trusted
	a.UntrustedReasons = nil
	a.LastError = ""
}
func (e SessionConnected) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("address", e.Address).Int("attempts", e.Attempts).
		Str("peer_agent", e.PeerAgentFullName).
		Str("peer_thumbprint", hex.EncodeToString(e.PeerThumbprint[:])).
		Bool("registered", e.Registered).Bool("trusted", e.Trusted)
}

// SessionFailed fires when the retry budget for a dial cycle exhausts
// before any attempt established a Session.
type SessionFailed struct {
	overseer.Subject
	Address  string
	Reason   string
	Attempts int
	At       time.Time
}

func (e SessionFailed) EventName() string     { return EventSessionFailed }
func (e SessionFailed) OccurredAt() time.Time { return e.At }
func (e SessionFailed) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Session = overseer.SessionStatusFailed
	a.Trusted = false
	a.Attempts = e.Attempts
	a.LastError = e.Reason
	if e.Address != "" {
		a.Address = e.Address
	}
}
func (e SessionFailed) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("address", e.Address).Str("reason", e.Reason).Int("attempts", e.Attempts)
}

// SessionBroken fires when an established Session terminates for a
// reason other than intentional teardown.
type SessionBroken struct {
	overseer.Subject
	Address string
	Reason  string
	At      time.Time
}

func (e SessionBroken) EventName() string     { return EventSessionBroken }
func (e SessionBroken) OccurredAt() time.Time { return e.At }
func (e SessionBroken) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Session = overseer.SessionStatusBroken
	a.Trusted = false
	a.LastError = e.Reason
}
func (e SessionBroken) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("address", e.Address).Str("reason", e.Reason)
}

// SessionClosed fires when a Session (or an in-flight dial) ends by
// intentional teardown: CancelDial on stop/die/destroy, or CP shutdown.
// It is an addition to the spec's event set so the worldview does not
// keep showing "connected" for a stopped container; it is deliberately
// not a SessionBroken, which means something went wrong.
type SessionClosed struct {
	overseer.Subject
	Reason string
	At     time.Time
}

func (e SessionClosed) EventName() string     { return EventSessionClosed }
func (e SessionClosed) OccurredAt() time.Time { return e.At }
func (e SessionClosed) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Session = overseer.SessionStatusClosed
	a.Trusted = false
}
func (e SessionClosed) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("reason", e.Reason)
}

// AgentRegistered fires once per container lifetime, after the CP-driven
// Register handshake (success or failure). Match reconnects do not
// re-fire it.
type AgentRegistered struct {
	overseer.Subject
	Ok     bool
	Reason string
	At     time.Time
}

func (e AgentRegistered) EventName() string     { return EventAgentRegistered }
func (e AgentRegistered) OccurredAt() time.Time { return e.At }
func (e AgentRegistered) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Registered = e.Ok
	if !e.Ok {
		a.LastError = e.Reason
		a.Trusted = false
		return
	}
	// A successful Register establishes trust for this Session unless a
	// finding of the same handshake (published before Register) already
	// withdrew it.
	a.Trusted = a.Session == overseer.SessionStatusConnected && len(a.UntrustedReasons) == 0
}
func (e AgentRegistered) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Bool("ok", e.Ok).Str("reason", e.Reason)
}

// AgentUntrusted fires when an identity outcome violates the trust
// contract. The Session stays open; subscribers enact policy.
type AgentUntrusted struct {
	overseer.Subject
	Reason overseer.UntrustedReason
	Detail string
	At     time.Time
}

func (e AgentUntrusted) EventName() string     { return EventAgentUntrusted }
func (e AgentUntrusted) OccurredAt() time.Time { return e.At }
func (e AgentUntrusted) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Trusted = false
	for _, r := range a.UntrustedReasons {
		if r == e.Reason {
			return
		}
	}
	a.UntrustedReasons = append(a.UntrustedReasons, e.Reason)
}
func (e AgentUntrusted) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("reason", string(e.Reason)).Str("detail", e.Detail)
}

// InitStarted fires when the CP begins running the plan against an
// established Session. StepCount is the plan length for "i of N".
type InitStarted struct {
	overseer.Subject
	StepCount int
	At        time.Time
}

func (e InitStarted) EventName() string     { return EventInitStarted }
func (e InitStarted) OccurredAt() time.Time { return e.At }
func (e InitStarted) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Init = overseer.InitStatusRunning
	a.InitStepCount = e.StepCount
	a.InitStepIndex = 0
	a.InitStepName = ""
	a.InitFailReason = ""
}
func (e InitStarted) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Int("step_count", e.StepCount)
}

// InitStepStarted fires when the Executor dispatches one step.
type InitStepStarted struct {
	overseer.Subject
	StepName  string
	StepIndex int
	StepCount int
	At        time.Time
}

func (e InitStepStarted) EventName() string     { return EventInitStepStarted }
func (e InitStepStarted) OccurredAt() time.Time { return e.At }
func (e InitStepStarted) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.InitStepIndex = e.StepIndex
	a.InitStepCount = e.StepCount
	a.InitStepName = e.StepName
}
func (e InitStepStarted) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("step", e.StepName).Int("step_index", e.StepIndex).Int("step_count", e.StepCount)
}

// InitStepCompleted fires when a step's command returns Done{0} (or is
// skipped because the image has no shell — see plan.go).
type InitStepCompleted struct {
	overseer.Subject
	StepName  string
	StepIndex int
	Duration  time.Duration
	ExitCode  int32
	At        time.Time
}

func (e InitStepCompleted) EventName() string     { return EventInitStepCompleted }
func (e InitStepCompleted) OccurredAt() time.Time { return e.At }
func (e InitStepCompleted) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.InitStepIndex = e.StepIndex
	a.InitStepName = e.StepName
}
func (e InitStepCompleted) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("step", e.StepName).Int("step_index", e.StepIndex).
		Dur("duration", e.Duration).Int32("exit_code", e.ExitCode)
}

// InitStepFailed fires when a step ends non-zero, errors, or times out.
type InitStepFailed struct {
	overseer.Subject
	StepName  string
	StepIndex int
	Duration  time.Duration
	ExitCode  int32
	Reason    overseer.InitFailureReason
	Detail    string
	At        time.Time
}

func (e InitStepFailed) EventName() string     { return EventInitStepFailed }
func (e InitStepFailed) OccurredAt() time.Time { return e.At }
func (e InitStepFailed) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.InitStepIndex = e.StepIndex
	a.InitStepName = e.StepName
	a.LastError = e.Detail
}
func (e InitStepFailed) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("step", e.StepName).Int("step_index", e.StepIndex).Dur("duration", e.Duration).
		Int32("exit_code", e.ExitCode).Str("reason", string(e.Reason)).Str("detail", e.Detail)
}

// InitCompleted is the terminal success event for one plan run.
type InitCompleted struct {
	overseer.Subject
	Duration time.Duration
	At       time.Time
}

func (e InitCompleted) EventName() string     { return EventInitCompleted }
func (e InitCompleted) OccurredAt() time.Time { return e.At }
func (e InitCompleted) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Init = overseer.InitStatusCompleted
	a.InitStepIndex = a.InitStepCount
}
func (e InitCompleted) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Dur("duration", e.Duration)
}

// InitFailed is the terminal failure event for one plan run. ExitCode is
// an addition to the spec's field set: the failing step's exit code (-1
// when the step did not exit, e.g. transport or timeout).
type InitFailed struct {
	overseer.Subject
	FailedStep string
	Reason     overseer.InitFailureReason
	Detail     string
	ExitCode   int32
	Duration   time.Duration
	At         time.Time
}

func (e InitFailed) EventName() string     { return EventInitFailed }
func (e InitFailed) OccurredAt() time.Time { return e.At }
func (e InitFailed) ApplyTo(s *overseer.State) {
	a, ok := touch(s, e.Subject, e.At)
	if !ok {
		return
	}
	a.Init = overseer.InitStatusFailed
	a.InitStepName = e.FailedStep
	a.InitFailReason = e.Reason
	a.LastError = e.Detail
}
func (e InitFailed) MarshalZerologObject(z *zerolog.Event) {
	e.Subject.MarshalZerologObject(z)
	z.Str("failed_step", e.FailedStep).Str("reason", string(e.Reason)).Str("detail", e.Detail).
		Int32("exit_code", e.ExitCode).Dur("duration", e.Duration)
}
