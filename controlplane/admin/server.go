package admin

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/agent"
	"github.com/clawker/clawker/controlplane/overseer"
	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/logger"
)

// RegistryReader is the slice of the registry the admin API reads.
type RegistryReader interface {
	Snapshot() ([]agent.Entry, error)
}

// Bus is the slice of the overseer the admin API uses: the worldview, live
// events with an atomic snapshot, the replay ring, and publishing its own
// audit events.
type Bus interface {
	Snapshot() *overseer.State
	SubscribeWithSnapshot(name string, filter func(overseer.Event) bool, handler func(overseer.Event)) (*overseer.State, func())
	Recent(since time.Time) []overseer.Event
	Publish(e overseer.Event)
}

// HealthFunc reports readiness and per-subsystem status ("ok" or a reason).
type HealthFunc func() (ready bool, subsystems map[string]string)

// Deps are the Server's collaborators. Registry, Bus and Health are
// required; Contain (or Docker, which it wraps) and Exec are optional:
// without them those RPCs answer Unavailable.
type Deps struct {
	Registry RegistryReader
	Bus      Bus
	Health   HealthFunc
	Docker   ContainerControl
	Contain  Containment // the runtime's containment; nil: DockerContainment of Docker
	Exec     Execer
	Egress   EgressControl // optional: egress RPCs answer Unavailable
	Version  string
	Log      *logger.Logger
	Clock    func() time.Time
}

// Server implements adminv1.AdminServiceServer.
type Server struct {
	adminv1.UnimplementedAdminServiceServer
	d    Deps
	log  *logger.Logger
	prof profiler
}

// New validates deps and returns a Server.
func New(d Deps) (*Server, error) {
	switch {
	case d.Registry == nil:
		return nil, errors.New("admin: nil registry")
	case d.Bus == nil:
		return nil, errors.New("admin: nil bus")
	case d.Health == nil:
		return nil, errors.New("admin: nil health func")
	}
	if d.Contain == nil && d.Docker != nil {
		d.Contain = DockerContainment{C: d.Docker}
	}
	if d.Clock == nil {
		d.Clock = time.Now
	}
	return &Server{d: d, log: logger.OrNop(d.Log)}, nil
}

// ListAgents joins registry rows with the live worldview. An agent appears
// when it has a row or a worldview entry; Registered says whether a row
// exists now.
func (s *Server) ListAgents(_ context.Context, req *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error) {
	agents, err := s.agents(s.d.Bus.Snapshot())
	if err != nil {
		return nil, err
	}
	return &adminv1.ListAgentsResponse{Agents: filterProject(agents, req.GetProject())}, nil
}

func filterProject(in []*adminv1.Agent, project string) []*adminv1.Agent {
	if project == "" {
		return in
	}
	out := in[:0]
	for _, a := range in {
		if a.GetProject() == project {
			out = append(out, a)
		}
	}
	return out
}

// agents builds the joined view from one worldview snapshot.
func (s *Server) agents(st *overseer.State) ([]*adminv1.Agent, error) {
	rows, err := s.registryRows()
	if err != nil {
		return nil, err
	}
	byID := joinAgents(rows, st, nil)
	out := make([]*adminv1.Agent, 0, len(byID))
	for _, a := range byID {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Project != out[j].Project {
			return out[i].Project < out[j].Project
		}
		if out[i].Agent != out[j].Agent {
			return out[i].Agent < out[j].Agent
		}
		return out[i].ContainerId < out[j].ContainerId
	})
	return out, nil
}

// registryRows is the registry scan, or Unavailable (logged) when it
// fails: never answer "no agents" while the registry is unreadable.
func (s *Server) registryRows() ([]agent.Entry, error) {
	rows, err := s.d.Registry.Snapshot()
	if err != nil {
		s.log.Error().Str("event", "admin_registry_unreadable").Err(err).Msg("registry snapshot failed")
		return nil, status.Error(codes.Unavailable, "registry unavailable")
	}
	return rows, nil
}

// joinAgents joins registry rows and worldview entries by container ID,
// keeping only the containers keep accepts by ID, agent name and project
// (nil keeps all), so no admin row is built for one it refuses. A
// registry row decides for its container; a worldview entry without a
// row is judged on its own.
func joinAgents(rows []agent.Entry, st *overseer.State, keep func(id, name, project string) bool) map[string]*adminv1.Agent {
	byID := map[string]*adminv1.Agent{}
	var dropped map[string]bool // rows keep refused: their worldview half goes too
	for i := range rows {
		r := &rows[i]
		if keep != nil && !keep(r.ContainerID, r.AgentName.String(), r.Project.String()) {
			if dropped == nil {
				dropped = map[string]bool{}
			}
			dropped[r.ContainerID] = true
			continue
		}
		byID[r.ContainerID] = rowAgent(r)
	}
	if st != nil {
		for id, w := range st.Agents {
			a, ok := byID[id]
			if !ok {
				if dropped[id] || (keep != nil && !keep(id, w.AgentName, w.Project)) {
					continue
				}
				a = &adminv1.Agent{ContainerId: id, Agent: w.AgentName, Project: w.Project}
				byID[id] = a
			}
			mergeWorldview(a, w)
		}
	}
	return byID
}

// rowAgent is the admin view of a registry row alone.
func rowAgent(r *agent.Entry) *adminv1.Agent {
	return &adminv1.Agent{
		ContainerId:          r.ContainerID,
		Agent:                r.AgentName.String(),
		Project:              r.Project.String(),
		Registered:           true,
		Thumbprint:           auth.ThumbprintHex(r.Thumbprint),
		RegisteredAtUnixNano: r.RegisteredAt.UnixNano(),
		SessionState:         string(overseer.SessionStatusNone),
		InitState:            string(overseer.InitStatusNone),
		// A registry row alone vouches for nothing: trust needs a live
		// Session that matched it. Without one the bool field reads
		// false, meaning "not established" (unknown), not "found
		// hostile" — untrusted_reasons says which.
		Trusted: false,
	}
}

func mergeWorldview(a *adminv1.Agent, w *overseer.AgentState) {
	a.Live = true
	if a.Agent == "" {
		a.Agent = w.AgentName
	}
	if a.Project == "" {
		a.Project = w.Project
	}
	a.SessionState = string(orDefault(string(w.Session), string(overseer.SessionStatusNone)))
	a.Attempts = int32(w.Attempts)
	// Trust is only ever reported for a live Session (the worldview
	// already clears it when one ends; this keeps admin fail-closed even
	// if an event is missed).
	a.Trusted = w.Trusted && w.Session == overseer.SessionStatusConnected
	a.UntrustedReasons = nil
	for _, r := range w.UntrustedReasons {
		a.UntrustedReasons = append(a.UntrustedReasons, string(r))
	}
	a.InitState = orDefault(string(w.Init), string(overseer.InitStatusNone))
	a.InitStepIndex = int32(w.InitStepIndex)
	a.InitStepCount = int32(w.InitStepCount)
	a.InitStepName = w.InitStepName
	a.InitFailureReason = string(w.InitFailReason)
	a.LastError = w.LastError
	a.PeerAgentFullName = w.PeerAgentFullName
	if w.PeerThumbprint != ([32]byte{}) {
		a.PeerThumbprint = auth.ThumbprintHex(w.PeerThumbprint)
	}
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Health reports readiness and subsystem status.
func (s *Server) Health(context.Context, *adminv1.HealthRequest) (*adminv1.HealthResponse, error) {
	ready, subs := s.d.Health()
	return &adminv1.HealthResponse{Ready: ready, Subsystems: subs, Version: s.d.Version}, nil
}

// resolve finds the one agent ref names: a full container ID or unique
// prefix, or agent name + project. Unknown or ambiguous refs are NotFound /
// InvalidArgument with a message the CLI can print as is.
func (s *Server) resolve(ref *adminv1.AgentRef) (*adminv1.Agent, error) {
	if ref == nil || (ref.GetContainerId() == "" && ref.GetAgent() == "") {
		return nil, status.Error(codes.InvalidArgument, "name an agent (agent name, or container ID)")
	}
	if id := ref.GetContainerId(); id != "" && !isHexPrefix(id) {
		return nil, status.Errorf(codes.InvalidArgument, "container ID %q: want hex digits (a prefix of at least 4)", id)
	}
	if ref.GetContainerId() == "" {
		if _, err := auth.NewAgentName(ref.GetAgent()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "agent name %q: %v", ref.GetAgent(), err)
		}
		if _, err := auth.NewProjectSlug(ref.GetProject()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "project %q: %v", ref.GetProject(), err)
		}
	}
	var hits []*adminv1.Agent
	a, ok, err := s.lookupID(ref.GetContainerId())
	switch {
	case err != nil:
		return nil, err
	case ok && a != nil:
		hits = []*adminv1.Agent{a}
	case !ok:
		// One worldview copy (a clone of every agent) serves both tries.
		st := s.d.Bus.Snapshot()
		if a := s.lookupLive(ref, st); a != nil {
			hits = []*adminv1.Agent{a}
		} else if hits, err = s.match(ref, st); err != nil {
			return nil, err
		}
	}
	switch len(hits) {
	case 0:
		return nil, status.Errorf(codes.NotFound, "no agent %s: see clawker agents", describeRef(ref))
	case 1:
		return hits[0], nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "%d agents match %s: use a longer container ID", len(hits), describeRef(ref))
}

// entryLookup and agentLookup are the point lookups of the production
// registry and overseer. They are optional so small fakes still satisfy
// Deps; without them a full container ID is resolved by the scan.
type entryLookup interface {
	LookupByContainerID(containerID string) (*agent.Entry, error)
}

type agentLookup interface {
	Agent(containerID string) (overseer.AgentState, bool)
}

// lookupID resolves a full container ID with one registry row read and one
// worldview read, so an exec by ID costs the same at 10 agents or 10k.
// ok=false means id is not a full ID or the deps lack point lookups (use
// the scan); a nil agent with ok=true means no such agent.
func (s *Server) lookupID(id string) (a *adminv1.Agent, ok bool, err error) {
	if len(id) != 64 {
		return nil, false, nil
	}
	reg, ok1 := s.d.Registry.(entryLookup)
	bus, ok2 := s.d.Bus.(agentLookup)
	if !ok1 || !ok2 {
		return nil, false, nil
	}
	e, err := reg.LookupByContainerID(id)
	switch {
	case errors.Is(err, agent.ErrUnknownAgent):
	case err != nil:
		s.log.Error().Str("event", "admin_registry_unreadable").Str("container_id", id).Err(err).Msg("registry lookup failed")
		return nil, true, status.Error(codes.Unavailable, "registry unavailable")
	default:
		a = rowAgent(e)
	}
	if w, live := bus.Agent(id); live {
		if a == nil {
			a = &adminv1.Agent{ContainerId: id, Agent: w.AgentName, Project: w.Project}
		}
		mergeWorldview(a, &w)
	}
	return a, true, nil
}

// lookupLive resolves an agent name + project from the in-memory
// worldview plus one registry row read, without the registry scan (an SQL
// query and a re-validation of every row) that match pays: the common
// exec and contain case of one live agent by that name. It returns nil —
// leaving the answer to match — unless exactly one live agent has the
// name and its registry row agrees, so ambiguity and row-name
// precedence are still judged by the scan. One difference is deliberate:
// a leftover row of a container the CP no longer sees does not make the
// live agent's name ambiguous.
func (s *Server) lookupLive(ref *adminv1.AgentRef, st *overseer.State) *adminv1.Agent {
	reg, ok := s.d.Registry.(entryLookup)
	if !ok || ref.GetContainerId() != "" || st == nil {
		return nil
	}
	var id string
	for cid, w := range st.Agents {
		if w.AgentName == ref.GetAgent() && w.Project == ref.GetProject() {
			if id != "" {
				return nil
			}
			id = cid
		}
	}
	if id == "" {
		return nil
	}
	w := st.Agents[id]
	// Names resolve only through registry rows: labels are set by whoever
	// created the container, so a live container without a row (an
	// impostor after `clawker rm`) is never found by name.
	e, err := reg.LookupByContainerID(id)
	switch {
	case err != nil: // no row (match reports a registry failure)
		return nil
	case e.AgentName.String() != ref.GetAgent() || e.Project.String() != ref.GetProject():
		return nil
	}
	a := rowAgent(e)
	mergeWorldview(a, w)
	return a
}

// match scans the registry rows and worldview st for a container ID
// prefix or an agent name + project, building admin rows only for the
// agents that match (the full list is never sorted or materialised).
func (s *Server) match(ref *adminv1.AgentRef, st *overseer.State) ([]*adminv1.Agent, error) {
	rows, err := s.registryRows()
	if err != nil {
		return nil, err
	}
	keep := func(id, name, project string) bool {
		if prefix := ref.GetContainerId(); prefix != "" {
			return strings.HasPrefix(id, prefix)
		}
		return name == ref.GetAgent() && project == ref.GetProject()
	}
	var hits []*adminv1.Agent
	for _, a := range joinAgents(rows, st, keep) {
		// A name matches registry rows only; a container ID may also name
		// a live container without a row, so an operator can still
		// contain (or, with --allow-untrusted, examine) it.
		if ref.GetContainerId() == "" && !a.GetRegistered() {
			continue
		}
		hits = append(hits, a)
	}
	return hits, nil
}

func describeRef(ref *adminv1.AgentRef) string {
	if ref.GetContainerId() != "" {
		return "with container ID " + ref.GetContainerId()
	}
	if ref.GetProject() != "" {
		return ref.GetAgent() + " in project " + ref.GetProject()
	}
	return ref.GetAgent()
}

func isHexPrefix(s string) bool {
	if len(s) < 4 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
