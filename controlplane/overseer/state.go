package overseer

import (
	"crypto/sha256"
	"time"
)

// Event is anything published on the bus.
type Event interface {
	EventName() string
	OccurredAt() time.Time
}

// Applier is an Event that folds into the worldview.
type Applier interface {
	Event
	ApplyTo(s *State)
}

// UntrustedReason classifies an AgentUntrusted outcome.
type UntrustedReason string

const (
	ReasonThumbprintMismatch UntrustedReason = "thumbprint_mismatch"
	ReasonCNMismatch         UntrustedReason = "cn_mismatch"
	ReasonPeerIPMismatch     UntrustedReason = "peer_ip_mismatch"
	ReasonChainInvalid       UntrustedReason = "chain_invalid"
	ReasonIdentityMismatch   UntrustedReason = "identity_mismatch"
	ReasonRegisterFailed     UntrustedReason = "register_failed"
	ReasonRegistryError      UntrustedReason = "registry_error"
	// ReasonRegistryRowLost: clawkerd reported itself already registered
	// but the registry holds no row for the container — the registry was
	// lost (degraded in-memory registry, `cp down --volumes`) while the
	// agent kept running. The agent stays untrusted (nothing vouches for
	// its cert), but it is not evidence of an attack, so the containment
	// policy does not act on it by default. A hostile clawkerd can claim
	// this reason too; that only buys it "untrusted, not contained".
	ReasonRegistryRowLost UntrustedReason = "registry_row_lost"
	// Register failures caused by the CP's side or the network, not by the
	// agent's identity: the Session carrying Register broke
	// (register_transport), no RegisterDone arrived in time
	// (register_timeout), or clawkerd reported that the CP's token endpoint
	// or AgentService was unreachable, overloaded or failing
	// (register_cp_unavailable). The agent is untrusted (nothing vouches
	// for its cert) but the containment policy does not act on them: a
	// slow or flooded CP must never take honest agents down. A hostile
	// clawkerd can produce them too; that buys it "untrusted, not
	// contained", never trust.
	ReasonRegisterTransport     UntrustedReason = "register_transport"
	ReasonRegisterTimeout       UntrustedReason = "register_timeout"
	ReasonRegisterCPUnavailable UntrustedReason = "register_cp_unavailable"
	// ReasonRegisterAssertionSpent: clawkerd was asked to Register again
	// after its one-time assertion was exchanged and removed (an earlier
	// Register failed CP-side). Advisory: recreate the agent.
	ReasonRegisterAssertionSpent UntrustedReason = "register_assertion_spent"
)

// ReasonContainerMismatch: the peer's cert does not carry
// urn:clawker:container:<id> of the container the CP dialed (another
// container's cert, or none). With chain_invalid it fails the Dialer's pin:
// the Session is kept for observation only.
const ReasonContainerMismatch UntrustedReason = "container_mismatch"

// InitFailureReason classifies an InitStepFailed / InitFailed outcome.
type InitFailureReason string

const (
	InitReasonNonZeroExit InitFailureReason = "non_zero_exit"
	InitReasonTimeout     InitFailureReason = "timeout"
	InitReasonSpawnFailed InitFailureReason = "spawn_failed"
	InitReasonRemoteError InitFailureReason = "remote_error"
	InitReasonTransport   InitFailureReason = "transport"
	InitReasonCancelled   InitFailureReason = "cancelled"
)

// SessionStatus is the lifecycle state of the CP→clawkerd Session.
type SessionStatus string

const (
	SessionStatusNone       SessionStatus = "none"
	SessionStatusConnecting SessionStatus = "connecting"
	SessionStatusConnected  SessionStatus = "connected"
	SessionStatusFailed     SessionStatus = "failed"
	SessionStatusBroken     SessionStatus = "broken"
	SessionStatusClosed     SessionStatus = "closed"
)

// InitStatus is the progress of the init plan.
type InitStatus string

const (
	InitStatusNone      InitStatus = "none"
	InitStatusRunning   InitStatus = "running"
	InitStatusCompleted InitStatus = "completed"
	InitStatusFailed    InitStatus = "failed"
)

// AgentState is the worldview of one agent container.
type AgentState struct {
	ContainerID string
	AgentName   string
	Project     string
	Address     string

	Session  SessionStatus
	Attempts int
	// ConnectedAt is when the current (or last) Session was established.
	// UntrustedReasons belong to that Session, so it tells a consumer
	// re-deriving actions from the worldview whether it already acted on
	// them (the containment policy's reconcile pass).
	ConnectedAt time.Time

	PeerAgentFullName string
	PeerThumbprint    [sha256.Size]byte

	Registered bool
	// Trusted is true only once trust has been positively established
	// for the current Session: a registry Match with a clean chain/CN/SAN
	// assessment, or a successful Register. It starts false, any
	// AgentUntrusted clears it for the rest of the Session
	// (UntrustedReasons are sticky until the next SessionConnected), and
	// a Session ending clears it again — nothing vouches for an agent
	// without a live Session.
	Trusted          bool
	UntrustedReasons []UntrustedReason

	Init          InitStatus
	InitStepIndex int
	InitStepCount int
	InitStepName  string
	// InitFailReason is why the plan failed (Init == InitFailed), e.g.
	// InitReasonTimeout for a step whose reply never came.
	InitFailReason InitFailureReason

	LastError string
	UpdatedAt time.Time
}

// State is the CP's live worldview keyed by container ID. Mutated only by
// the Overseer through ApplyTo; readers get deep copies.
type State struct {
	Agents map[string]*AgentState

	// gone remembers destroyed container IDs (never reused by Docker) so a
	// dial attempt racing the destroy cannot recreate the row; goneOrder
	// bounds it, oldest first.
	gone      map[string]struct{}
	goneOrder []string
}

// maxTombstones bounds the destroyed-ID memory. A late event trails its
// destroy by at most one dial attempt, so the recent few thousand suffice.
const maxTombstones = 4096

// NewState returns an empty worldview.
func NewState() *State {
	return &State{Agents: map[string]*AgentState{}, gone: map[string]struct{}{}}
}

// Agent returns the entry for id, creating it on first sight, or nil for a
// destroyed container. For the ApplyTo of events that start a Session;
// everything else uses Existing so a late event about a destroyed container
// cannot resurrect its row.
func (s *State) Agent(id string) *AgentState {
	a, ok := s.Agents[id]
	if !ok {
		if _, dead := s.gone[id]; dead {
			return nil
		}
		a = &AgentState{ContainerID: id, Session: SessionStatusNone, Init: InitStatusNone}
		s.Agents[id] = a
	}
	return a
}

// Forget drops a destroyed container's row for good. For ApplyTo.
func (s *State) Forget(id string) {
	delete(s.Agents, id)
	if s.gone == nil {
		s.gone = map[string]struct{}{}
	}
	if _, dup := s.gone[id]; dup {
		return
	}
	s.gone[id] = struct{}{}
	s.goneOrder = append(s.goneOrder, id)
	if len(s.goneOrder) > maxTombstones {
		delete(s.gone, s.goneOrder[0])
		s.goneOrder = s.goneOrder[1:]
	}
}

// Existing returns the entry for id without creating it. For ApplyTo.
func (s *State) Existing(id string) (*AgentState, bool) {
	a, ok := s.Agents[id]
	return a, ok
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := NewState()
	for id, a := range s.Agents {
		cp := *a
		cp.UntrustedReasons = append([]UntrustedReason(nil), a.UntrustedReasons...)
		c.Agents[id] = &cp
	}
	return c
}
