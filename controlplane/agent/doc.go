// Package agent owns the CP-side agent surface: the persisted identity
// registry, the AgentService.Register handler, the per-RPC
// IdentityInterceptor, the CP→clawkerd Session dialer and init Executor,
// and the agent-axis event types. It must not serve the admin API or own
// listeners: the daemon package wires it.
//
// Trust is asymmetric: the inbound surface (Register) is strict and fails
// closed with one generic PermissionDenied; the outbound dialer is
// permissive, recording identity outcomes as events so the CP can always
// reach — and contain — an agent.
package agent
