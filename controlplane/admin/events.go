package admin

import (
	"fmt"
	"reflect"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/clawker/clawker/api/admin/v1"
	"github.com/clawker/clawker/controlplane/overseer"
)

// watchBuffer bounds the events queued for one slow watcher; overflowing it
// ends that watch (the CLI reconnects with --since) rather than letting one
// client hold memory without bound.
const watchBuffer = 1024

// WatchEvents sends a snapshot of every agent, then (when since is set)
// buffered events newer than since, then live events, all filtered by
// agent, project and event name.
func (s *Server) WatchEvents(req *adminv1.WatchEventsRequest, stream adminv1.AdminService_WatchEventsServer) error {
	ctx := stream.Context()
	match := eventFilter(req)
	ch := make(chan overseer.Event, watchBuffer)
	overflow := make(chan struct{})
	var overflowed bool
	snap, unsub := s.d.Bus.SubscribeWithSnapshot("admin-watch", match, func(e overseer.Event) {
		select {
		case ch <- e:
		default:
			if !overflowed {
				overflowed = true
				close(overflow)
			}
		}
	})
	defer unsub()

	agents, err := s.agents(snap)
	if err != nil {
		return err
	}
	agents = filterProject(agents, req.GetProject())
	if req.GetAgent() != "" {
		kept := agents[:0]
		for _, a := range agents {
			if a.GetAgent() == req.GetAgent() {
				kept = append(kept, a)
			}
		}
		agents = kept
	}
	if err := stream.Send(&adminv1.WatchEventsResponse{Payload: &adminv1.WatchEventsResponse_Snapshot{
		Snapshot: &adminv1.ListAgentsResponse{Agents: agents}}}); err != nil {
		return err
	}
	seen := map[string]bool{}
	if ns := req.GetSinceUnixNano(); ns > 0 {
		for _, e := range s.d.Bus.Recent(time.Unix(0, ns)) {
			if !match(e) {
				continue
			}
			pe := ToProto(e)
			seen[eventKey(pe)] = true
			if err := stream.Send(&adminv1.WatchEventsResponse{Payload: &adminv1.WatchEventsResponse_Event{Event: pe}}); err != nil {
				return err
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-overflow:
			s.log.Warn().Str("event", "admin_watch_overflow").Msg("watcher too slow; ending its stream")
			return status.Error(codes.ResourceExhausted, "event watcher fell behind; reconnect with --since")
		case e := <-ch:
			pe := ToProto(e)
			if len(seen) > 0 && seen[eventKey(pe)] {
				delete(seen, eventKey(pe))
				continue
			}
			if err := stream.Send(&adminv1.WatchEventsResponse{Payload: &adminv1.WatchEventsResponse_Event{Event: pe}}); err != nil {
				return err
			}
		}
	}
}

func eventKey(e *adminv1.Event) string {
	return fmt.Sprintf("%s/%d/%s", e.GetName(), e.GetAtUnixNano(), e.GetContainerId())
}

// eventFilter builds the bus filter for a watch request. It is pure, as
// the bus requires.
func eventFilter(req *adminv1.WatchEventsRequest) func(overseer.Event) bool {
	types := map[string]bool{}
	for _, t := range req.GetEventTypes() {
		types[t] = true
	}
	agent, project := req.GetAgent(), req.GetProject()
	return func(e overseer.Event) bool {
		if len(types) > 0 && !types[e.EventName()] {
			return false
		}
		if agent == "" && project == "" {
			return true
		}
		_, a, p := identity(e)
		if agent != "" && a != agent {
			return false
		}
		return project == "" || p == project
	}
}

// subjected is an event that names the agent it is about: every event
// embedding overseer.Subject, and DockerEvent (from its labels). The
// compiler checks it, so renaming an identity field cannot silently drop
// identity from WatchEvents.
type subjected interface {
	EventSubject() overseer.Subject
}

// identity returns (container ID, agent, project) of an event; events
// that name no agent have none.
func identity(e overseer.Event) (id, agent, project string) {
	sub, ok := e.(subjected)
	if !ok {
		return "", "", ""
	}
	s := sub.EventSubject()
	return s.ContainerID, s.AgentName, s.Project
}

// ToProto converts a bus event to the wire Event: identity fields lifted,
// every other exported field rendered into fields.
func ToProto(e overseer.Event) *adminv1.Event {
	id, agent, project := identity(e)
	out := &adminv1.Event{Name: e.EventName(), AtUnixNano: e.OccurredAt().UnixNano(),
		ContainerId: id, Agent: agent, Project: project, Fields: map[string]string{}}
	v := reflect.ValueOf(e)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return out
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Type == subjectType {
			continue
		}
		switch f.Name {
		case "ContainerID", "AgentName", "Project", "At", "Labels":
			// Identity is lifted into the Event itself (these names cover
			// events that carry it unembedded, like DockerEvent); raw
			// Docker labels would only repeat it.
			continue
		}
		out.Fields[f.Name] = render(v.Field(i))
	}
	return out
}

var subjectType = reflect.TypeOf(overseer.Subject{})

func render(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case [32]byte:
		if x == ([32]byte{}) {
			return ""
		}
		return fmt.Sprintf("%x", x[:])
	case time.Duration:
		return x.String()
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v.Interface())
}
