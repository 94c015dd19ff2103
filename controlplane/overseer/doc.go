// Package overseer owns the CP's typed in-process event bus and the State
// worldview every event folds into through ApplyTo.
//
// Publish applies an Applier to State under the bus lock and then fans the
// event out: every subscriber has a bounded buffer and its own goroutine,
// so a slow subscriber never blocks a publisher — a full buffer drops the
// delivery, counts it (Drops) and logs event=bus_subscriber_drop. Handler,
// filter and ApplyTo panics are recovered and logged. Snapshot returns deep
// copies; Recent replays a bounded ring of past events; SubscribeWithSnapshot
// pairs a snapshot with a subscription atomically (admin WatchEvents).
//
// Because deliveries can drop, no subscriber may be the only path to a
// state change that matters: the agent lifecycle subscribers are backed by
// agent.Start's periodic reconcile (DefaultReconcileInterval), which
// re-derives dials and registry evictions from Docker.
//
// Worldview rows are created only by events that begin a Session
// (State.Agent); every other ApplyTo uses State.Existing, so an event that
// lands after a container's destroy cannot resurrect it. AgentState.Trusted
// is false until trust is positively established for the live Session.
//
// It holds the agent worldview (AgentState and its status values) but no
// agent behaviour, and knows nothing of Docker or gRPC: event types live
// with their publishers (agent, dockerevents) and must not be defined here.
// Subject, the identity those events embed, lives here so every publisher
// and admin share one type.
package overseer
