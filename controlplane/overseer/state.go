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
)

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
	SessionNone       SessionStatus = "none"
	SessionConnecting SessionStatus = "connecting"
	SessionConnected  SessionStatus = "connected"
	SessionFailed     SessionStatus = "failed"
	SessionBroken     SessionStatus = "broken"
	SessionClosed     SessionStatus = "closed"
)

// InitStatus is the progress of the init plan.
type InitStatus string

const (
	InitNone      InitStatus = "none"
	InitRunning   InitStatus = "running"
	InitCompleted InitStatus = "completed"
	InitFailed    InitStatus = "failed"
)

// AgentState is the worldview of one agent container.
type AgentState struct {
	ContainerID string
	AgentName   string
	Project     string
	Address     string

	Session  SessionStatus
	Attempts int

	PeerAgentFullName string
	PeerThumbprint    [sha256.Size]byte

	Registered       bool
	Trusted          bool
	UntrustedReasons []UntrustedReason

	Init          InitStatus
	InitStepIndex int
	InitStepCount int
	InitStepName  string

	LastError string
	UpdatedAt time.Time
}

// State is the CP's live worldview keyed by container ID. Mutated only by
// the Overseer through ApplyTo; readers get deep copies.
type State struct {
	Agents map[string]*AgentState
}

// NewState returns an empty worldview.
func NewState() *State { return &State{Agents: map[string]*AgentState{}} }

// Agent returns the entry for id, creating it on first sight. For ApplyTo.
func (s *State) Agent(id string) *AgentState {
	a, ok := s.Agents[id]
	if !ok {
		a = &AgentState{ContainerID: id, Session: SessionNone, Init: InitNone, Trusted: true}
		s.Agents[id] = a
	}
	return a
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
