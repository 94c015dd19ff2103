// Package peerid answers one question for the CP's agent-facing surfaces
// (the token endpoint and the AgentService identity gate): which agent
// container owns this live peer IP? The answer is grounded in Docker, the
// independent truth, never in what the peer claims: a Docker-backed index
// nominates the candidate and a live inspect confirms it.
//
// The index follows the event bus by its own subscription (Follow), so no
// other subsystem feeds it and none waits on its Docker calls.
package peerid
